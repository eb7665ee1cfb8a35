"""The payments port: the three money operations a refund saga needs, and the two adapters
that implement them (a ledger in PostgreSQL, the default; an HTTP payment provider).

Every operation takes an idempotency key chosen by the caller (thread and saga step). Calling
again with the same key returns what the first call did instead of doing it twice: that is
what makes a crash, a retry, a resume, or a provider that times out after committing, safe.
"""

from __future__ import annotations

import os
from typing import Protocol

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput, Unavailable


class PaymentDeclined(Exception):
    """The provider refused for good (a 4xx: card closed, refund exceeds charge). Retrying
    with the same key returns the same refusal; the saga compensates instead."""


class PaymentUnavailable(Unavailable):
    """The provider could not be reached or kept failing (5xx, timeouts) after the retries;
    the step is retried later with the same key (`signoff resume`)."""


class IdempotencyConflict(RuntimeError):
    """A key was reused for a different operation: a bug, never retried."""


class PaymentsConfigError(InvalidInput):
    pass


class PaymentsPort(Protocol):
    """Where money moves. Each method returns the provider's reference for what it did."""

    name: str

    def place_credit_note(self, key: str, order_id: str, amount_cents: int, currency: str) -> str: ...

    def void_credit_note(self, key: str, credit_note: str, order_id: str, amount_cents: int, currency: str) -> str: ...

    def refund(self, key: str, order_id: str, amount_cents: int, currency: str) -> str: ...


def payments_from_env(pool: ConnectionPool, environ: dict[str, str] | None = None) -> PaymentsPort:
    """SIGNOFF_PAYMENTS_URL set: the HTTP provider there (SIGNOFF_PAYMENTS_KEY as its bearer
    token, SIGNOFF_PAYMENTS_TIMEOUT seconds per call, default 10); unset: the ledger."""
    from checkpoint.settings import SettingsError, bounded_number, redacted

    env = os.environ if environ is None else environ
    url = (env.get("SIGNOFF_PAYMENTS_URL") or "").strip()
    if not url:
        from nodes.payments.ledger import LedgerPayments

        return LedgerPayments(pool)
    from nodes.payments.http import HttpPayments

    if not url.startswith(("http://", "https://")) or any(not ch.isprintable() or ch.isspace() for ch in url):
        raise PaymentsConfigError(f"SIGNOFF_PAYMENTS_URL must be an http(s) URL, not {redacted('SIGNOFF_PAYMENTS_URL', url)[:80]!r}: fix or unset it")
    raw = (env.get("SIGNOFF_PAYMENTS_TIMEOUT") or "").strip()
    try:
        timeout = bounded_number(raw, "SIGNOFF_PAYMENTS_TIMEOUT", upper=600.0) if raw else 10.0
    except SettingsError as exc:
        raise PaymentsConfigError(str(exc)) from None
    return HttpPayments(url, token=env.get("SIGNOFF_PAYMENTS_KEY") or None, timeout=timeout)
