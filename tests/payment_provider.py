"""A fake payment provider for tests (standard library only), Stripe-shaped like the HTTP
adapter expects (nodes/payments/http.py):

    with PaymentProvider() as provider:
        provider.fault("refund", "timeout_after_commit")      # the next refund call
        provider.always("refund", "decline")                  # every refund call
        ... SIGNOFF_PAYMENTS_URL=provider.url ...
        assert provider.count("refund") == 1

It keeps what it committed (credit notes, refunds, voids) and the response it gave for every
idempotency key: a request with a known key gets that response again without doing anything,
and a known key with other parameters is refused (422), as real providers do. Faults, per
operation, are consumed one per request before anything else:

- `error500`              answer 500, commit nothing
- `timeout`               say nothing for `hang` seconds, then close; commit nothing
- `timeout_after_commit`  commit and remember the response, then say nothing and close: the
                          client never learns it succeeded (the nasty one)
- `decline`               a permanent refusal, 402 "card closed", remembered under the key
- `hold` / `hold_after_commit`  keep the request waiting (before / after committing) until the
                          test sets `release`, then close without answering: a test kills its
                          client meanwhile (`held(op)` counts the requests held so far)
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPS = ("credit_note", "refund", "void")
FAULTS = ("error500", "timeout", "timeout_after_commit", "decline", "hold", "hold_after_commit")
MAX_HOLD = 60.0
#: No hang outlives this, so a test cannot stall on the provider.
MAX_HANG = 10.0


@dataclass(frozen=True)
class Request:
    op: str
    key: str
    body: dict[str, Any]
    replayed: bool  # answered from a stored response


class PaymentProvider:
    def __init__(self, hang: float = 2.0) -> None:
        self.hang = min(hang, MAX_HANG)
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}  # id -> {op, order_id, amount_cents, currency, status}
        self.responses: dict[str, tuple[str, int, dict[str, Any]]] = {}  # key -> (fingerprint, status, body)
        self.requests: list[Request] = []
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._always: dict[str, str] = {}
        self._stopping = threading.Event()
        self.release = threading.Event()
        self._held: dict[str, int] = defaultdict(int)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- test API ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fault(self, op: str, *kinds: str) -> None:
        """Queue faults for the next requests of `op`."""
        assert op in OPS and all(k in FAULTS for k in kinds), (op, kinds)
        with self.lock:
            self._faults[op].extend(kinds)

    def first(self, op: str, kind: str) -> None:
        """Apply `kind` to the very next request of `op`, before any queued fault."""
        assert op in OPS and kind in FAULTS
        with self.lock:
            self._faults[op].appendleft(kind)

    def held(self, op: str) -> int:
        with self.lock:
            return self._held[op]

    def always(self, op: str, kind: str | None) -> None:
        """Apply `kind` to every request of `op` (after the queued ones); None: stop."""
        assert op in OPS and (kind is None or kind in FAULTS)
        with self.lock:
            if kind is None:
                self._always.pop(op, None)
            else:
                self._always[op] = kind

    def count(self, op: str, status: str | None = None) -> int:
        """Committed objects of `op` (optionally with this status)."""
        with self.lock:
            return sum(1 for o in self.objects.values() if o["op"] == op and (status is None or o["status"] == status))

    def calls(self, op: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.op == op)

    def __enter__(self) -> "PaymentProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the server ----------------------------------------------------------------------

    def _next_fault(self, op: str) -> str | None:
        with self.lock:
            queue = self._faults[op]
            return queue.popleft() if queue else self._always.get(op)

    def _commit(self, op: str, key: str, fingerprint: str, body: dict[str, Any], path: list[str]) -> tuple[int, dict[str, Any]]:
        """Do the operation once per key; (status, response body)."""
        with self.lock:
            stored = self.responses.get(key)
            if stored is not None:
                self.requests.append(Request(op, key, body, True))
                if stored[0] != fingerprint:
                    return 422, {"error": {"message": "idempotency key reused with other parameters"}}
                return stored[1], stored[2]
            self.requests.append(Request(op, key, body, False))
            if op == "void":
                target = self.objects.get(path[2])
                if target is None or target["op"] != "credit_note":
                    status, answer = 404, {"error": {"message": "no such credit note"}}
                elif target["status"] == "void":
                    status, answer = 400, {"error": {"message": "credit note already void"}}
                else:
                    target["status"] = "void"
                    status, answer = 200, self._create(op, body, {"voids": path[2]})
            else:
                status, answer = 200, self._create(op, body)
            self.responses[key] = (fingerprint, status, answer)
            return status, answer

    def _create(self, op: str, body: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        prefix = {"credit_note": "cn", "refund": "re", "void": "vd"}[op]
        ident = f"{prefix}_{len(self.objects) + 1:04d}"
        self.objects[ident] = {"op": op, "status": "done", **body, **(extra or {})}
        return {"id": ident, "object": op, **body}

    def _decline(self, op: str, key: str, fingerprint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(Request(op, key, body, key in self.responses))
            answer = {"error": {"type": "card_error", "message": "the card was closed"}}
            self.responses.setdefault(key, (fingerprint, 402, answer))
            return 402, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _silence(self) -> None:
                provider._stopping.wait(provider.hang)
                self.close_connection = True

            def _hold(self, op: str) -> None:
                with provider.lock:
                    provider._held[op] += 1
                provider.release.wait(MAX_HOLD)
                self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = [p for p in self.path.split("/") if p][1:]  # drop "v1"
                op = {("credit_notes",): "credit_note", ("refunds",): "refund"}.get(tuple(path))
                if op is None and len(path) == 3 and path[0] == "credit_notes" and path[2] == "void":
                    op = "void"
                key = self.headers.get("Idempotency-Key") or ""
                if op is None:
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if not key:
                    return self._send(400, {"error": {"message": "Idempotency-Key header required"}})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                fingerprint = json.dumps([self.path, body], sort_keys=True)
                fault = provider._next_fault(op)
                if fault == "error500":
                    return self._send(500, {"error": {"message": "internal error"}})
                if fault == "timeout":
                    return self._silence()
                if fault == "hold":
                    return self._hold(op)
                if fault == "decline":
                    return self._send(*provider._decline(op, key, fingerprint, body))
                if fault == "hold_after_commit" and provider._always.get(op) == "decline":
                    provider._decline(op, key, fingerprint, body)  # what it commits is the refusal
                    return self._hold(op)
                status, answer = provider._commit(op, key, fingerprint, body, ["", *path])
                if fault == "timeout_after_commit":
                    return self._silence()
                if fault == "hold_after_commit":
                    return self._hold(op)
                self._send(status, answer)

        return Handler
