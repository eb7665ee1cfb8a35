"""The default payments adapter: a ledger in PostgreSQL. Credit notes, refunds and voids are
rows of `ledger_entries`, each under its idempotency key (unique), so a repeated call returns
the row written before. Nothing leaves the database: use it where refunds are paid out by a
person or a batch that reads the ledger."""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from nodes.payments import IdempotencyConflict, PaymentDeclined

_PREFIX = {"credit_note": "CN", "refund": "RF", "void": "VD"}


class LedgerPayments:
    name = "ledger"

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def _write(self, key: str, kind: str, order_id: str, amount_cents: int, currency: str, voids: int | None = None) -> str:
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO ledger_entries (idempotency_key, kind, order_id, amount_cents, currency, voids) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (key, kind, order_id, amount_cents, currency, voids),
            ).fetchone()
            if row is None:  # this key was used before: the same operation, done already
                row = conn.execute("SELECT * FROM ledger_entries WHERE idempotency_key = %s", (key,)).fetchone()
                _same(row, key, kind, order_id, amount_cents, currency)
        return f"{_PREFIX[kind]}-{row['id']}"

    def place_credit_note(self, key: str, order_id: str, amount_cents: int, currency: str) -> str:
        return self._write(key, "credit_note", order_id, amount_cents, currency)

    def refund(self, key: str, order_id: str, amount_cents: int, currency: str) -> str:
        return self._write(key, "refund", order_id, amount_cents, currency)

    def void_credit_note(self, key: str, credit_note: str, order_id: str, amount_cents: int, currency: str) -> str:
        prefix, _, number = credit_note.partition("-")
        if prefix != "CN" or not number.isdigit():
            raise PaymentDeclined(f"{credit_note!r} is not a credit note of this ledger")
        return self._write(key, "void", order_id, amount_cents, currency, voids=int(number))


def _same(row: dict[str, Any], key: str, kind: str, order_id: str, amount_cents: int, currency: str) -> None:
    if (row["kind"], row["order_id"], row["amount_cents"], row["currency"]) != (kind, order_id, amount_cents, currency):
        raise IdempotencyConflict(f"idempotency key {key!r} was used for another operation")
