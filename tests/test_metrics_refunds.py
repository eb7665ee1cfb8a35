"""The refund counters of /metrics, read from the payment operations a real refund saga records."""

from __future__ import annotations

import pytest

from observability.db_metrics import DatabaseCollector
from tests.conftest import expect
from tests.payment_provider import PaymentProvider
from tests.refund_fixtures import OWNER, REFUND_MESSAGE, lead, orders, server  # noqa: F401 - fixtures


@pytest.fixture
def provider():
    with PaymentProvider() as provider:
        yield provider


def refund_counts(pool) -> dict[str, float]:
    families = {family.name: family for family in DatabaseCollector(pool).collect()}
    return {s.labels["outcome"]: s.value for s in families["signoff_refunds"].samples if s.name == "signoff_refunds_total"}


def test_refunds_issued_and_compensated_are_counted(cli, pool, database_url, provider, orders, monkeypatch, lead):
    assert refund_counts(pool) == {}
    monkeypatch.setenv("SIGNOFF_PAYMENTS_URL", provider.url)  # the provider declines the refund for good: compensated
    provider.always("refund", "decline")
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "r1").exit_code == 0
    assert lead("approve", "r1", *expect(database_url, "r1")).exit_code == 0
    assert refund_counts(pool) == {"compensated": 1}

    monkeypatch.delenv("SIGNOFF_PAYMENTS_URL")  # the PostgreSQL ledger refunds it
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "r2").exit_code == 0
    assert lead("approve", "r2", *expect(database_url, "r2")).exit_code == 0
    assert refund_counts(pool) == {"compensated": 1, "issued": 1}
