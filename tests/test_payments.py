"""The payments port: each adapter does an operation once per idempotency key, whatever
happens to the call (retries, timeouts, a timeout after the provider committed)."""

from __future__ import annotations

import pytest

from nodes.payments import IdempotencyConflict, PaymentDeclined, PaymentsConfigError, PaymentUnavailable, payments_from_env
from nodes.payments.http import HttpPayments
from nodes.payments.ledger import LedgerPayments
from tests.conftest import count_rows
from tests.payment_provider import PaymentProvider


@pytest.fixture
def provider():
    with PaymentProvider(hang=1.0) as provider:
        yield provider


def http(provider: PaymentProvider, attempts: int = 4) -> HttpPayments:
    return HttpPayments(provider.url, timeout=0.3, attempts=attempts, backoff=0.01, max_backoff=0.02)


# --- ledger ------------------------------------------------------------------------------------


def test_ledger_writes_each_operation_once_per_key(pool):
    ledger = LedgerPayments(pool)
    note = ledger.place_credit_note("t1:credit_note", "1042", 14900, "USD")
    assert ledger.place_credit_note("t1:credit_note", "1042", 14900, "USD") == note
    refund = ledger.refund("t1:refund", "1042", 14900, "USD")
    assert refund != note and ledger.refund("t1:refund", "1042", 14900, "USD") == refund
    void = ledger.void_credit_note("t1:void", note, "1042", 14900, "USD")
    assert ledger.void_credit_note("t1:void", note, "1042", 14900, "USD") == void
    assert count_rows(pool, "ledger_entries") == 3
    assert count_rows(pool, "ledger_entries", kind="void") == 1


def test_ledger_refuses_a_key_reused_for_another_operation_and_a_second_void(pool):
    ledger = LedgerPayments(pool)
    note = ledger.place_credit_note("k1", "1042", 14900, "USD")
    with pytest.raises(IdempotencyConflict):
        ledger.place_credit_note("k1", "1042", 100, "USD")
    ledger.void_credit_note("v1", note, "1042", 14900, "USD")
    with pytest.raises(Exception):
        ledger.void_credit_note("v2", note, "1042", 14900, "USD")  # one void per credit note (unique)
    with pytest.raises(PaymentDeclined):
        ledger.void_credit_note("v3", "RF-1", "1042", 14900, "USD")
    assert count_rows(pool, "ledger_entries") == 2


# --- HTTP provider -----------------------------------------------------------------------------


def test_http_sends_the_key_and_returns_the_providers_reference(provider):
    payments = http(provider)
    note = payments.place_credit_note("t1:credit_note", "1042", 14900, "USD")
    assert note.startswith("cn_")
    assert payments.place_credit_note("t1:credit_note", "1042", 14900, "USD") == note
    assert provider.count("credit_note") == 1
    assert [r.key for r in provider.requests] == ["t1:credit_note"] * 2
    assert [r.replayed for r in provider.requests] == [False, True]


@pytest.mark.parametrize("faults", [("error500",), ("timeout",), ("error500", "timeout", "error500")])
def test_http_retries_transient_failures_with_the_same_key(provider, faults):
    provider.fault("refund", *faults)
    reference = http(provider).refund("t1:refund", "1042", 14900, "USD")
    assert provider.count("refund") == 1
    assert provider.objects[reference]["amount_cents"] == 14900
    assert {r.key for r in provider.requests} == {"t1:refund"}
    assert provider.calls("refund") == 1, "failed attempts reached no commit; the one that did is counted"


def test_a_timeout_after_the_provider_committed_refunds_once(provider):
    provider.fault("refund", "timeout_after_commit")
    reference = http(provider).refund("t1:refund", "1042", 14900, "USD")
    assert provider.count("refund") == 1, "the retry found the committed refund instead of making a second"
    assert [r.replayed for r in provider.requests] == [False, True]
    assert reference == next(iter(provider.objects))


def test_a_permanent_refusal_is_not_retried_and_stays_a_refusal(provider):
    provider.fault("refund", "decline")
    with pytest.raises(PaymentDeclined, match="card was closed"):
        http(provider).refund("t1:refund", "1042", 14900, "USD")
    assert provider.calls("refund") == 1 and provider.count("refund") == 0
    with pytest.raises(PaymentDeclined):  # the same key keeps its answer
        http(provider).refund("t1:refund", "1042", 14900, "USD")
    assert provider.count("refund") == 0


def test_a_provider_that_keeps_failing_is_unavailable_after_the_attempts(provider):
    provider.always("credit_note", "error500")
    with pytest.raises(PaymentUnavailable, match="failed 3 times"):
        http(provider, attempts=3).place_credit_note("t1:credit_note", "1042", 14900, "USD")
    assert provider.count("credit_note") == 0


def test_void_cancels_the_credit_note_once(provider):
    payments = http(provider)
    note = payments.place_credit_note("t1:credit_note", "1042", 14900, "USD")
    provider.fault("void", "timeout_after_commit")
    void = payments.void_credit_note("t1:void_credit_note", note, "1042", 14900, "USD")
    assert provider.objects[note]["status"] == "void"
    assert provider.count("void") == 1 and provider.objects[void]["voids"] == note


def test_unreachable_provider_is_unavailable(provider):
    payments = HttpPayments("http://127.0.0.1:1", timeout=0.2, attempts=2, backoff=0.01, max_backoff=0.02)
    with pytest.raises(PaymentUnavailable):
        payments.refund("k", "1042", 1, "USD")


# --- configuration -------------------------------------------------------------------------------


def test_the_adapter_comes_from_the_environment(pool, provider):
    assert isinstance(payments_from_env(pool, {}), LedgerPayments)
    chosen = payments_from_env(pool, {"SIGNOFF_PAYMENTS_URL": provider.url, "SIGNOFF_PAYMENTS_TIMEOUT": "2"})
    assert isinstance(chosen, HttpPayments) and chosen.timeout == 2.0
    for bad in ({"SIGNOFF_PAYMENTS_URL": "ftp://x"}, {"SIGNOFF_PAYMENTS_URL": "http://a b"},
                {"SIGNOFF_PAYMENTS_URL": provider.url, "SIGNOFF_PAYMENTS_TIMEOUT": "nan"}):
        with pytest.raises(PaymentsConfigError):
            payments_from_env(pool, bad)


def test_a_refused_payments_url_is_quoted_without_its_credentials():
    with pytest.raises(PaymentsConfigError, match="must be an http") as refused:
        payments_from_env(None, {"SIGNOFF_PAYMENTS_URL": "https://shop:pay-pass-9@pay.example/v1?api_key=sk-9 x"})  # a space in it
    assert "pay-pass-9" not in str(refused.value) and "sk-9" not in str(refused.value) and "shop:***@pay.example" in str(refused.value)
