"""The HTTP payments adapter: a payment provider's REST API (Stripe-shaped), every call with an
`Idempotency-Key` header.

    POST /v1/credit_notes            {order_id, amount_cents, currency} -> {"id": ...}
    POST /v1/credit_notes/{id}/void  {order_id, amount_cents, currency} -> {"id": ...}
    POST /v1/refunds                 {order_id, amount_cents, currency} -> {"id": ...}

What is retried, with the same key (tenacity, exponential backoff): timeouts, dropped
connections, 5xx, 429, and 409 (the provider is still working on that key). A timeout after
the provider committed is the case that matters: the retry carries the same key, so the
provider answers with what it already did, and nothing happens twice. What is not retried: any
other 4xx, a permanent refusal (PaymentDeclined), which the saga compensates.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from nodes.payments import PaymentDeclined, PaymentUnavailable

RETRY_STATUS = frozenset({409, 429, 500, 502, 503, 504})


class _Transient(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpPayments:
    name = "http"

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0, attempts: int = 4,
                 backoff: float = 0.2, max_backoff: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token, self.timeout, self.attempts = token, timeout, attempts
        self.backoff, self.max_backoff = backoff, max_backoff

    def place_credit_note(self, key: str, order_id: str, amount_cents: int, currency: str) -> str:
        return self._post("/v1/credit_notes", key, order_id, amount_cents, currency)

    def void_credit_note(self, key: str, credit_note: str, order_id: str, amount_cents: int, currency: str) -> str:
        return self._post(f"/v1/credit_notes/{quote(credit_note, safe='')}/void", key, order_id, amount_cents, currency)

    def refund(self, key: str, order_id: str, amount_cents: int, currency: str) -> str:
        return self._post("/v1/refunds", key, order_id, amount_cents, currency)

    def _post(self, path: str, key: str, order_id: str, amount_cents: int, currency: str) -> str:
        body = {"order_id": order_id, "amount_cents": amount_cents, "currency": currency}
        headers = {"Idempotency-Key": key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Transient)),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=self.backoff, max=self.max_backoff, jitter=self.backoff),
            reraise=True,
        )
        try:
            with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
                for attempt in retrying:
                    with attempt:
                        return self._call(client, path, body, headers)
        except _Transient as exc:
            raise PaymentUnavailable(f"the payment provider failed {self.attempts} times ({exc.reason}): "
                                     f"the step is safe to retry, run `signoff resume THREAD` later") from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _call(client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
        try:
            response = client.post(path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise _Transient("timeout") from None
        except httpx.TransportError as exc:
            raise _Transient(exc.__class__.__name__) from None
        if response.status_code in RETRY_STATUS:
            raise _Transient(f"HTTP {response.status_code}")
        data = _json(response)
        if response.status_code >= 400:
            message = str((data.get("error") or {}).get("message") or response.reason_phrase)[:200]
            raise PaymentDeclined(f"HTTP {response.status_code}: {message}")
        reference = data.get("id")
        if not isinstance(reference, str) or not reference:
            raise _Transient("an answer without an id")
        return reference[:100]


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
