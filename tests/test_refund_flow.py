"""The refund path of the support graph, end to end through the CLI: what the gate shows, what
is executed after approval (and only then), and what is compensated when the provider refuses."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from checkpoint import threads
from checkpoint.identity import os_user
from nodes.orders import Order
from nodes.refunds import RefundCase, amount_problem, assess, read_amount, read_order_id
from tests.conftest import count_rows, expect
from tests.fault_server import ok
from tests.payment_provider import PaymentProvider
from tests.refund_fixtures import OWNER, REFUND_MESSAGE, flat, lead, orders, server  # noqa: F401 - fixtures

@pytest.fixture
def provider():
    with PaymentProvider(hang=1.0) as provider:
        yield provider


def ops(pool, tid: str) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        return [(r["step"], r["status"]) for r in conn.execute(
            "SELECT step, status FROM payment_operations WHERE thread_id = %s ORDER BY created_at", (tid,))]


def audit_kinds(pool, tid: str) -> list[str]:
    with pool.connection() as conn:
        return [r["kind"] for r in conn.execute("SELECT kind FROM audit_events WHERE thread_id = %s ORDER BY id", (tid,))]


# --- the policy, as a pure function ------------------------------------------------------------

NOW = datetime(2026, 3, 20, tzinfo=timezone.utc)
ORDER = Order("1042", OWNER, 14900, "USD", NOW - timedelta(days=3), "delivered")


@pytest.mark.parametrize("order, case, email, refunded, reason, amount", [
    (ORDER, {"order_id": "1042"}, OWNER, 0, "eligible", 14900),
    (ORDER, {"order_id": "1042"}, "MAYA.LOPEZ@example.com ", 0, "eligible", 14900),
    (ORDER, {"order_id": "1042", "requested_cents": 5000}, OWNER, 0, "eligible", 5000),
    (ORDER, {"order_id": "1042", "requested_cents": 5000}, OWNER, 10000, "exceeds_paid", 5000),
    (ORDER, {"order_id": "1042"}, OWNER, 4900, "eligible", 10000),
    (ORDER, {"order_id": "1042"}, OWNER, 14900, "already_refunded", None),
    (ORDER, {"order_id": "1042"}, "someone@else.com", 0, "identity", None),
    (ORDER, {"order_id": "1042"}, None, 0, "no_sender", None),
    (None, {"order_id": "9999"}, OWNER, 0, "not_found", None),
    (None, {"order_id": None}, OWNER, 0, "no_order", None),
    (Order("1", OWNER, 100, "USD", NOW - timedelta(days=15), "delivered"), {"order_id": "1"}, OWNER, 0, "window", None),
    (Order("1", OWNER, 100, "USD", NOW - timedelta(days=13), "cancelled"), {"order_id": "1"}, OWNER, 0, "cancelled", None),
    (Order("1", OWNER, 100, "USD", NOW - timedelta(days=1), "refunded"), {"order_id": "1"}, OWNER, 0, "already_refunded", None),
])
def test_eligibility(order, case, email, refunded, reason, amount):
    result = assess(order, RefundCase(**case), email, NOW, 14, refunded)
    assert result["reason"] == reason
    assert result["status"] == ("proposed" if reason == "eligible" else "declined")
    assert result.get("amount_cents") == amount


def test_a_check_with_nothing_to_check_against_is_its_own_reason_not_a_finding():
    assert assess(None, RefundCase(order_id="1042"), OWNER, NOW, 14, 0, loaded=False)["reason"] == "unchecked"
    assert assess(None, RefundCase(order_id="1042"), OWNER, NOW, 14, 0, loaded=True)["reason"] == "not_found"
    assert assess(ORDER, RefundCase(order_id="1042"), " ", NOW, 14, 0)["reason"] == "no_sender"


@pytest.mark.parametrize("message, proposed, asked", [
    ("Refund $0 for order 1042", None, "$0"),
    ("Refund $0 for order 1042", 0.0, "$0"),
    ("Refund $99999999999999999999 for order 1042", 1e20, "$99999999999999999999"),
    ("Refund 99999999999999999999 of order 1042", 1e20, "99999999999999999999"),
    ("Refund -5 dollars of order 1042", None, "-5 dollars"),
    ("Refund -5 of order 1042", 5.0, "-5"),
    ("Refund 0 of order 1042", 0.0, "0"),
    ("Refund 20 of order 1042", float("nan"), "nan"),
    ("Refund order 1042", float("inf"), "inf"),
    ("Refund 20.001 dollars of order 1042", 20.001, "20.001 dollars"),
])
def test_an_amount_no_refund_can_be_is_flagged_never_read_as_the_whole_order(message, proposed, asked):
    assert read_amount(message, proposed, "1042") == (None, asked)
    case = RefundCase(order_id="1042", requested_cents=None, unrefundable=asked)
    assessed = assess(ORDER, case, OWNER, NOW, 14, 0)
    assert (assessed["reason"], assessed.get("amount_cents")) == ("bad_amount", None)


def test_a_requested_amount_of_zero_from_an_older_thread_is_not_the_whole_order():
    assessed = assess(ORDER, RefundCase(order_id="1042", requested_cents=0), OWNER, NOW, 14, 0)
    assert (assessed["reason"], assessed.get("amount_cents")) == ("bad_amount", None)


def test_a_reply_must_state_the_refund_in_its_amount_and_currency():
    assert amount_problem("We have refunded 1000.00 JPY for order 9.", 100000, "JPY") is None
    assert amount_problem("We have refunded 12.50 XTS for order 9.", 1250, "XTS") is None, "any currency an order uses"
    assert amount_problem("We have refunded 1000.00 JPY for order 9.", 100000, "USD") == "the reply states 1000.00 JPY, but the refund is 1000.00 USD"
    assert amount_problem("We have refunded $1000 for order 9.", 100000, "EUR") == "the reply states $1000, but the refund is 1000.00 EUR"
    assert amount_problem("Your refund is on its way.", 100000, "EUR") == "the reply does not state the amount refunded (1000.00 EUR)"


def test_model_output_is_used_only_where_the_message_says_it():
    assert read_order_id("Please refund order 1042", "1042") == "1042"
    assert read_order_id("Please refund order 1042", "#1042") == "1042"
    assert read_order_id("Please refund order 1042", "9999") == "1042", "an order the message never names is not taken"
    assert read_order_id("refund #A-17 now", "") == "A-17"
    assert read_order_id("I want a refund", "1042") is None
    assert read_order_id("I ordered twice, refund one", None) is None, "'ordered' is not an order number"
    assert read_order_id("refund my order no. 77", None) == "77"


def test_a_quantity_the_model_reads_as_an_order_number_is_not_taken():
    message = "I paid for the annual plan 5 days ago but I don't use it. Can I get my money back?"
    assert read_order_id(message, "5") is None, "'5 days ago' is not order 5"
    assert read_order_id("I was charged $96 and would like at least $60 back", "96") is None
    assert read_order_id("We have 12 seats; refund order 12 please", "12") == "12", "named as an order, it is one"
    assert read_order_id("refund 2231 please, it arrived 3 days late", "2231") == "2231"
    assert read_amount("refund 20 of order 1042", 20.0) == (2000, None)
    assert read_amount("refund 1,200.50 of order 1042", 1200.5) == (120050, None)
    assert read_amount("refund order 1042", 500.0) == (None, None), "an amount the customer never wrote is never proposed"
    assert read_amount("refund order 1042", 1042.0, "1042") == (None, None), "the order number is not an amount"


# --- through the graph ----------------------------------------------------------------------------


def test_the_gate_shows_the_action_and_the_reply_under_one_digest_and_nothing_moves_before_approval(cli, pool, database_url, orders, lead):
    result = cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "r1")
    assert result.exit_code == 0, result.output
    assert "extract_refund" in result.output and "check_refund" in result.output and "propose_refund" in result.output
    shown = cli("show", "r1").output
    assert "action: refund(1042, 149.00, USD)" in shown and "We have refunded 149.00 USD for order 1042" in shown
    assert "refund(1042, 149.00, USD)" in cli("pending").output
    assert "approval needed: stage 1/1 support-lead" in result.output, "start names the stage that must approve it"
    assert "approval needed: stage 1/1 support-lead" in shown
    own = cli("approve", "r1", *expect(database_url, "r1"))
    assert own.exit_code == 4 and f"{os_user()} started this thread and may not decide its approval" in own.output
    assert count_rows(pool, "payment_operations") == 0 and count_rows(pool, "ledger_entries") == 0 and count_rows(pool, "outbox") == 0

    # A digest of the reply alone does not approve the action.
    from nodes.gates import content_digest

    from runtime.thread_runner import ThreadRunner

    draft = ThreadRunner.for_thread(pool, "r1").snapshot("r1").values["draft"]
    refused = lead("approve", "r1", "--expect", content_digest(draft))
    assert refused.exit_code == 2 and "no such digest" in refused.output  # the reply alone was never what the gate showed
    approved = lead("approve", "r1", *expect(database_url, "r1"))
    assert approved.exit_code == 0, approved.output
    assert "refunded 149.00 USD on order 1042" in flat(approved.output)
    assert ops(pool, "r1") == [("credit_note", "done"), ("refund", "done")]
    assert count_rows(pool, "ledger_entries", kind="credit_note") == 1 and count_rows(pool, "ledger_entries", kind="refund") == 1
    with pool.connection() as conn:
        body = conn.execute("SELECT kind, body FROM outbox WHERE thread_id = 'r1'").fetchone()
    assert body["kind"] == "reply" and "149.00 USD" in body["body"]
    kinds = audit_kinds(pool, "r1")
    assert kinds.index("decision_approved") < kinds.index("saga_credit_note") < kinds.index("saga_refund") < kinds.index("reply_sent")
    assert threads.get(pool, "r1").status == "finished"


@pytest.mark.parametrize("message, email, says", [
    (REFUND_MESSAGE, "mallory@example.com", "could not find an order 1042 placed with the email address you wrote from"),
    (REFUND_MESSAGE, None, "write to us from the email address you used for the order"),
    ("Please refund order 1007, I never used it", "liam.chen@example.com", "outside our 14-day refund window"),
    ("Please refund order 1013", "sofia.rossi@example.com", "has already been refunded"),
    ("Please refund order 1038", "olivia.brown@example.com", "was cancelled"),
    ("Please refund order 4242", OWNER, "could not find an order 4242 placed with the email address"),
])
def test_a_request_that_is_not_eligible_gets_an_explaining_reply_and_never_a_refund(cli, pool, database_url, server, orders, message, email, says):
    order = re.search(r"order (\d+)", message).group(1)
    server.rule("Extract the refund request", ok(f'{{"order_id": "{order}", "amount": null}}'))
    args = ["start", "support", message, "--thread", "n1"] + (["--email", email] if email else [])
    assert cli(*args).exit_code == 0
    shown = flat(cli("show", "n1").output)
    assert "action:" not in shown and says in shown, shown
    if email == "mallory@example.com":
        assert "149" not in shown, "nothing about the order is told to someone who does not own it"
    assert cli("approve", "n1", *expect(database_url, "n1")).exit_code == 0
    assert count_rows(pool, "payment_operations") == 0 and count_rows(pool, "ledger_entries") == 0
    assert count_rows(pool, "outbox", thread_id="n1", kind="reply") == 1


def test_a_refund_asked_before_any_orders_are_loaded_claims_no_failed_lookup_and_warns_the_reviewer(cli, pool, database_url, server):
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "u1").exit_code == 0
    shown = flat(cli("show", "u1").output)
    assert "could not find" not in shown and "action:" not in shown, shown
    assert "check: no orders are loaded, so order 1042 was not looked up and no refund is proposed" in shown
    assert "A team member will look at your order and reply to you personally" in shown
    assert cli("approve", "u1", *expect(database_url, "u1")).exit_code == 0
    assert count_rows(pool, "payment_operations") == 0
    with pool.connection() as conn:
        sent = conn.execute("SELECT body FROM outbox WHERE thread_id = 'u1'").fetchone()["body"]
    assert "could not find" not in sent and "check:" not in sent, "the customer gets the reply, not the reviewer's check"


def test_a_request_without_a_sender_address_claims_no_failed_lookup_and_warns_the_reviewer(cli, server, orders):
    assert cli("start", "support", REFUND_MESSAGE, "--thread", "s1").exit_code == 0
    shown = flat(cli("show", "s1").output)
    assert "could not find" not in shown and "action:" not in shown, shown
    assert "check: the message has no sender address, so whether order 1042 is theirs was not checked" in shown


@pytest.mark.parametrize("message, model", [
    ("Refund $0 for order 1042", '{"order_id": "1042", "amount": 0}'),
    ("Refund $0 for order 1042", '{"order_id": "1042", "amount": null}'),
    ("Refund $99999999999999999999 for order 1042", '{"order_id": "1042", "amount": 99999999999999999999}'),
    ("Refund -5 dollars of order 1042", '{"order_id": "1042", "amount": -5}'),
])
def test_an_amount_no_refund_can_be_is_flagged_at_the_gate_and_refunds_nothing(cli, pool, database_url, server, orders, message, model):
    server.rule("Extract the refund request", ok(model))
    assert cli("start", "support", message, "--email", OWNER, "--thread", "z1").exit_code == 0
    shown = flat(cli("show", "z1").output)
    assert "action:" not in shown and "149.00" not in shown, "never the whole order"
    assert "check: the customer asked for" in shown and "no refund is proposed" in shown
    assert "The amount in your message is not one we can refund" in shown
    assert cli("approve", "z1", *expect(database_url, "z1")).exit_code == 0
    assert count_rows(pool, "payment_operations") == 0


def test_a_redraft_that_misstates_the_refund_is_not_offered_and_the_reviewer_is_told(cli, pool, database_url, server, orders):
    server.once("Rewrite the support reply", ok("Good news: your refund of 50.00 USD for order 1042 is on its way."))
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "w1").exit_code == 0
    assert cli("reject", "w1", "--feedback", "warmer please").exit_code == 0
    shown = flat(cli("show", "w1").output)
    assert "50.00" not in shown and "We have refunded 149.00 USD for order 1042" in shown, shown
    assert "check: the redraft" in shown and "the rejected reply is offered again" in shown
    server.once("Rewrite the support reply", ok("Good news: your refund for order 1042 is on its way."))
    assert cli("reject", "w1", "--feedback", "warmer still").exit_code == 0
    shown = flat(cli("show", "w1").output)
    assert "We have refunded 149.00 USD for order 1042" in shown and "Good news" not in shown, shown
    assert "the reply does not state the amount refunded (149.00 USD)" in shown


def test_rejecting_redrafts_the_reply_and_keeps_the_action_and_an_expiry_refunds_nothing(cli, pool, database_url, server, orders):
    server.rule("Rewrite the support reply", ok("Good news: your refund of 149.00 USD for order 1042 is on its way."))
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "r2").exit_code == 0
    assert cli("reject", "r2", "--feedback", "warmer please").exit_code == 0
    shown = flat(cli("show", "r2").output)
    assert "action: refund(1042, 149.00, USD)" in shown and "Good news" in shown
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET deadline = now() - interval '1 hour' WHERE thread_id = 'r2'")
    assert cli("expire").exit_code == 0
    assert count_rows(pool, "payment_operations") == 0, "an expired gate never moves money"
    assert count_rows(pool, "outbox", thread_id="r2", kind="holding") == 1


def test_a_second_thread_cannot_refund_an_order_twice(cli, pool, database_url, orders, lead):
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "a").exit_code == 0
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "b").exit_code == 0
    assert lead("approve", "a", *expect(database_url, "a")).exit_code == 0
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "c").exit_code == 0
    assert "has already been refunded" in flat(cli("show", "c").output)
    # b was eligible when proposed; its saga checks the order again before anything moves.
    late = lead("approve", "b", *expect(database_url, "b"))
    assert late.exit_code == 0 and "refund failed (the order was refunded by another request meanwhile" in flat(late.output), late.output
    assert count_rows(pool, "ledger_entries", kind="refund") == 1 and count_rows(pool, "ledger_entries", kind="credit_note") == 1
    assert count_rows(pool, "outbox", thread_id="b", kind="holding") == 1 and count_rows(pool, "audit_events", thread_id="b", kind="saga_refused") == 1


def test_a_permanent_refusal_compensates_once_in_reverse_order_and_keeps_the_ticket_open(cli, env, pool, database_url, provider, orders, monkeypatch, lead):
    monkeypatch.setenv("SIGNOFF_PAYMENTS_URL", provider.url)
    monkeypatch.setenv("SIGNOFF_PAYMENTS_TIMEOUT", "0.5")
    provider.always("refund", "decline")
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "f1").exit_code == 0
    result = lead("approve", "f1", *expect(database_url, "f1"))
    assert result.exit_code == 0, result.output
    assert "refund failed (HTTP 402: the card was closed), credit note voided" in flat(result.output)
    assert provider.count("credit_note", "void") == 1 and provider.count("refund") == 0 and provider.count("void") == 1
    assert ops(pool, "f1") == [("credit_note", "done"), ("refund", "failed"), ("void_credit_note", "done")]
    kinds = [k for k in audit_kinds(pool, "f1") if k.startswith(("saga_", "reply_", "ticket_"))]
    assert kinds == ["saga_credit_note", "saga_refund_failed", "saga_compensated_void", "ticket_opened", "reply_sent"]
    with pool.connection() as conn:
        assert conn.execute("SELECT kind FROM outbox WHERE thread_id = 'f1'").fetchone()["kind"] == "holding"
        assert conn.execute("SELECT status FROM tickets WHERE thread_id = 'f1'").fetchone()["status"] == "open"
    audit = cli("audit", "f1").output
    assert audit.index("saga_credit_note") < audit.index("saga_refund_failed") < audit.index("saga_compensated_void")
    # Resuming a finished saga does nothing again.
    assert cli("resume", "f1").exit_code == 0
    assert provider.calls("void") == 1 and count_rows(pool, "payment_operations", thread_id="f1") == 3


def test_a_provider_that_stays_down_fails_the_thread_resumably_and_refunds_once_when_back(cli, pool, database_url, provider, orders, monkeypatch, lead):
    monkeypatch.setenv("SIGNOFF_PAYMENTS_URL", provider.url)
    monkeypatch.setenv("SIGNOFF_PAYMENTS_TIMEOUT", "0.3")
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "d1").exit_code == 0
    provider.always("refund", "error500")
    provider.fault("credit_note", "timeout_after_commit")
    result = lead("approve", "d1", *expect(database_url, "d1"))
    assert result.exit_code != 0 and "payment provider failed" in result.output, result.output
    assert threads.get(pool, "d1").status == "failed"
    provider.always("refund", None)
    resumed = cli("resume", "d1")
    assert resumed.exit_code == 0, resumed.output
    assert provider.count("credit_note") == 1 and provider.count("refund") == 1
    assert ops(pool, "d1") == [("credit_note", "done"), ("refund", "done")]


def test_a_refusal_rerun_after_a_crash_is_recorded_and_audited_once(cli, pool, database_url, orders, monkeypatch, lead):
    """The window between the refusal's commit and the node's checkpoint: a run killed there
    runs place_credit_note again on resume. Here it is run again directly, as resume would."""
    from types import SimpleNamespace

    from runtime.thread_runner import ThreadRunner
    from nodes import refund_saga

    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "a").exit_code == 0
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "b").exit_code == 0
    assert lead("approve", "a", *expect(database_url, "a")).exit_code == 0
    assert lead("approve", "b", *expect(database_url, "b")).exit_code == 0
    assert count_rows(pool, "audit_events", thread_id="b", kind="saga_refused") == 1
    case = ThreadRunner.for_thread(pool, "b").snapshot("b").values["refund"]
    state = {"refund": {k: v for k, v in case.items() if k not in ("status", "failure")}}  # as the node first saw it
    monkeypatch.setattr(refund_saga, "current_thread_id", lambda: "b")
    again = refund_saga.place_credit_note(state, SimpleNamespace(context=SimpleNamespace(pool=pool, payments=None)))
    assert again["refund"]["status"] == "failed" and "refunded by another request" in again["refund"]["failure"]
    assert count_rows(pool, "audit_events", thread_id="b", kind="saga_refused") == 1, "the rerun audits nothing again"
    assert ops(pool, "b") == [("credit_note", "failed")] and count_rows(pool, "ledger_entries") == 2
