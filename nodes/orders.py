"""Orders: what a refund is checked against. Loaded from CSV (`signoff orders load`), read by
the refund nodes (who owns an order, what was paid, when).

Money is held in minor units (cents) as integers: a refund of 0.1 + 0.2 must never become
0.30000000000000004. The CSV's `amount` is a decimal string with at most two decimals.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput, NotFound
from nodes.knowledge import read_file_argument

HEADER = ("order_id", "email", "amount", "currency", "ordered_at", "status")
STATUSES = ("paid", "shipped", "delivered", "cancelled", "refunded")
#: 10 billion in major units: beyond any order, and far inside bigint cents.
MAX_AMOUNT_CENTS = 10**12
MAX_ORDERS = 100_000
ORDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
CURRENCY = re.compile(r"[A-Z]{3}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")


class OrdersFileError(InvalidInput):
    """An orders CSV is not in the expected format; the message names the file and line."""


class OrdersFileNotFound(NotFound):
    pass


@dataclass(frozen=True)
class Order:
    order_id: str
    email: str
    amount_cents: int
    currency: str
    ordered_at: datetime
    status: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["amount"] = format_amount(self.amount_cents)
        data["ordered_at"] = self.ordered_at.isoformat()
        return data


def parse_amount(text: str) -> int:
    """'49.90' -> 4990; ValueError for anything but a positive amount with at most 2 decimals."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"amount {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"amount {text!r} must be a positive number")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount {text!r} has more than two decimals")
    if cents > MAX_AMOUNT_CENTS:
        raise ValueError(f"amount {text!r} is too large")
    return int(cents)


def format_amount(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _parse_when(text: str) -> datetime:
    """An ISO date or date-time; a date means midnight UTC, a naive time means UTC."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_orders(text: str, source: str) -> list[Order]:
    """Every row of an orders CSV, all validated before anything is written."""
    if "\x00" in text:
        raise OrdersFileError(f"{source}: contains NUL bytes, so it is not a CSV file")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != HEADER:
        raise OrdersFileError(f"{source}: the first line must be the header {','.join(HEADER)}")
    if len(rows) - 1 > MAX_ORDERS:
        raise OrdersFileError(f"{source}: more than {MAX_ORDERS} orders: split the file")
    orders: dict[str, Order] = {}
    for line, cells in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(HEADER):
            raise OrdersFileError(f"{source} line {line}: {len(cells)} fields, expected {len(HEADER)}")
        order_id, email, amount, currency, ordered_at, status = (cell.strip() for cell in cells)
        where = f"{source} line {line}"
        if not ORDER_ID.fullmatch(order_id):
            raise OrdersFileError(f"{where}: order_id {order_id[:50]!r} must be 1-40 letters, digits, '.', '_' or '-'")
        if order_id in orders:
            raise OrdersFileError(f"{where}: order {order_id} appears twice")
        if not EMAIL.fullmatch(email) or not email.isprintable():
            raise OrdersFileError(f"{where}: {email[:50]!r} is not an email address")
        try:
            cents = parse_amount(amount)
        except ValueError as exc:
            raise OrdersFileError(f"{where}: {exc}") from None
        if not CURRENCY.fullmatch(currency):
            raise OrdersFileError(f"{where}: currency {currency[:20]!r} must be three capital letters (ISO 4217), e.g. USD")
        try:
            when = _parse_when(ordered_at)
        except ValueError:
            raise OrdersFileError(f"{where}: ordered_at {ordered_at[:40]!r} must be an ISO date, e.g. 2026-03-01") from None
        if status not in STATUSES:
            raise OrdersFileError(f"{where}: status {status[:20]!r} must be one of {', '.join(STATUSES)}")
        orders[order_id] = Order(order_id, email.lower(), cents, currency, when, status)
    return list(orders.values())


def read_orders_file(path: Path) -> list[Order]:
    text = read_file_argument(path, OrdersFileError, OrdersFileNotFound,
                              expected=f"a CSV with the header {','.join(HEADER)}", as_file="a CSV file")
    # A spreadsheet's CSV export often starts with a byte-order mark.
    return parse_orders(text.removeprefix("\ufeff"), str(path))


def demo_orders(today: date | None = None) -> list[Order]:
    """The shipped demo orders, dated relative to `today`: the newest is placed today and the
    rest keep their distance from it, so the refund-window examples (order 1042 inside the
    window, 1007 outside it) hold on whatever day they are loaded."""
    text = resources.files("nodes").joinpath("data/orders.csv").read_text(encoding="utf-8")
    orders = parse_orders(text, "demo orders")
    newest = max(o.ordered_at for o in orders)
    anchor = datetime.combine(today or datetime.now(timezone.utc).date(), time(newest.hour, newest.minute), timezone.utc)
    shift: timedelta = anchor - newest
    return [Order(o.order_id, o.email, o.amount_cents, o.currency, o.ordered_at + shift, o.status) for o in orders]


def load_orders(pool: ConnectionPool, orders: list[Order]) -> tuple[int, int]:
    """Insert new orders and update changed ones, in one transaction; (written, unchanged).
    Loading the same file twice changes nothing."""
    written = 0
    with pool.connection() as conn, conn.transaction():
        for o in orders:
            row = conn.execute(
                "INSERT INTO orders (order_id, email, amount_cents, currency, ordered_at, status) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO UPDATE SET "
                "email = EXCLUDED.email, amount_cents = EXCLUDED.amount_cents, currency = EXCLUDED.currency, "
                "ordered_at = EXCLUDED.ordered_at, status = EXCLUDED.status, loaded_at = now() "
                "WHERE (orders.email, orders.amount_cents, orders.currency, orders.ordered_at, orders.status) IS DISTINCT FROM "
                "(EXCLUDED.email, EXCLUDED.amount_cents, EXCLUDED.currency, EXCLUDED.ordered_at, EXCLUDED.status) "
                "RETURNING order_id",
                (o.order_id, o.email, o.amount_cents, o.currency, o.ordered_at, o.status),
            ).fetchone()
            written += row is not None
    return written, len(orders) - written


def _order(row: dict[str, Any]) -> Order:
    return Order(row["order_id"], row["email"], int(row["amount_cents"]), row["currency"], row["ordered_at"], row["status"])


def list_orders(pool: ConnectionPool) -> list[Order]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT * FROM orders ORDER BY ordered_at DESC, order_id").fetchall()
    return [_order(r) for r in rows]


def get_order(pool: ConnectionPool, order_id: str) -> Order | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM orders WHERE order_id = %s", (order_id,)).fetchone()
    return _order(row) if row else None


def orders_loaded(pool: ConnectionPool) -> bool:
    """Are there any orders to look an order up in? Without them, "not found" means nothing."""
    with pool.connection() as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM orders) AS loaded").fetchone()["loaded"]
