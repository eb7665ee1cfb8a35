"""Orders: the CSV format, idempotent loading, the demo data the refund examples rely on."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from nodes.orders import OrdersFileError, demo_orders, read_orders_file, get_order, list_orders, load_orders, parse_amount, parse_orders
from tests.conftest import count_rows

HEADER = "order_id,email,amount,currency,ordered_at,status\n"


def test_amounts_are_exact_cents():
    assert parse_amount("149.00") == 14900 and parse_amount("0.1") == 10 and parse_amount("12") == 1200
    for bad in ("nan", "inf", "-1", "0", "1.001", "1e13", "abc", ""):
        with pytest.raises(ValueError):
            parse_amount(bad)


@pytest.mark.parametrize("text, says", [
    ("order,email\n", "header"),
    (HEADER + "1,a@example.com,10,USD,2026-01-01\n", "5 fields"),
    (HEADER + "a b,a@example.com,10,USD,2026-01-01,paid\n", "order_id"),
    (HEADER + "1,not-an-email,10,USD,2026-01-01,paid\n", "not an email"),
    (HEADER + "1,a@example.com,1.234,USD,2026-01-01,paid\n", "more than two decimals"),
    (HEADER + "1,a@example.com,10,usd,2026-01-01,paid\n", "currency"),
    (HEADER + "1,a@example.com,10,USD,yesterday,paid\n", "ordered_at"),
    (HEADER + "1,a@example.com,10,USD,2026-01-01,lost\n", "status"),
    (HEADER + "1,a@example.com,10,USD,2026-01-01,paid\n1,b@example.com,10,USD,2026-01-01,paid\n", "appears twice"),
    (HEADER + "1,a@example.com,10,USD,2026-01-01,paid\x00\n", "NUL"),
])
def test_a_bad_file_is_refused_naming_the_line(text, says):
    with pytest.raises(OrdersFileError, match=says):
        parse_orders(text, "f.csv")


def test_a_spreadsheet_export_with_a_byte_order_mark_reads_like_any_csv(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "1,a@example.com,10,USD,2026-01-01,paid\n").encode())
    assert [o.order_id for o in read_orders_file(path)] == ["1"]


def test_a_file_that_is_not_utf8_text_is_refused_naming_it(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes(HEADER.encode() + b"1,a@example.com,10,USD,2026-01-01,pa\xffid\n")
    with pytest.raises(OrdersFileError, match="orders.csv: not UTF-8"):
        read_orders_file(path)


def test_loading_is_idempotent_and_updates_changed_rows(pool):
    first = parse_orders(HEADER + "A1,Ann@Example.com,10.50,EUR,2026-01-02,paid\nA2,b@example.com,99,USD,2026-01-03T10:00:00+02:00,delivered\n", "f")
    assert load_orders(pool, first) == (2, 0)
    assert load_orders(pool, first) == (0, 2)
    changed = parse_orders(HEADER + "A1,ann@example.com,10.50,EUR,2026-01-02,refunded\n", "f")
    assert load_orders(pool, changed) == (1, 0)
    order = get_order(pool, "A1")
    assert order is not None and order.status == "refunded" and order.email == "ann@example.com" and order.amount_cents == 1050
    assert get_order(pool, "A2").ordered_at.utcoffset() is not None  # type: ignore[union-attr]
    assert count_rows(pool, "orders") == 2


def test_demo_orders_are_dated_from_the_day_they_are_loaded(pool):
    today = date(2031, 5, 9)
    orders = {o.order_id: o for o in demo_orders(today)}
    assert len(orders) >= 30
    assert max(o.ordered_at for o in orders.values()).date() == today
    assert orders["1042"].ordered_at.date() == today - timedelta(days=3), "inside the 14-day window"
    assert orders["1007"].ordered_at.date() < today - timedelta(days=14), "outside it"
    assert orders["1042"].amount_cents == 14900 and orders["1021"].amount_cents > 100000
    load_orders(pool, list(orders.values()))
    assert [o.order_id for o in list_orders(pool)][0] == max(orders.values(), key=lambda o: o.ordered_at).order_id


def test_orders_commands(cli, tmp_path):
    result = cli("orders", "list")
    assert result.exit_code == 0 and "no orders" in result.output
    loaded = cli("orders", "load")
    assert loaded.exit_code == 0 and "50 loaded, 0 unchanged" in loaded.output, loaded.output
    again = cli("orders", "load")
    assert again.exit_code == 0 and "0 loaded, 50 unchanged" in again.output
    listing = cli("orders", "list", "--json")
    rows = json.loads(listing.output)
    assert listing.exit_code == 0 and len(rows) == 50
    assert next(r for r in rows if r["order_id"] == "1042")["amount"] == "149.00"
    hostile = tmp_path / "o.csv"
    hostile.write_text(HEADER + "X1,evil\u202e@example.com,5,USD,2026-01-01,paid\n", encoding="utf-8")
    refused = cli("orders", "load", str(hostile))
    assert refused.exit_code == 2 and "not an email address" in refused.output, "a bidi override never reaches the table"
    assert len(json.loads(cli("orders", "list", "--json").output)) == 50
