"""`signoff worker --metrics-port N`: /metrics, /healthz and /readyz on a small HTTP server
in a side thread of the worker (standard library; the worker needs no web extra)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_metrics(host: str, port: int, url: str) -> ThreadingHTTPServer:
    """Start answering on host:port now, in a side thread; the server (`shutdown()` stops it).
    InvalidInput if the address cannot be bound (the port is taken)."""
    from checkpoint.errors import InvalidInput
    from observability import db_metrics, metrics
    from observability.health import readiness, small_pool

    pool = small_pool(url)

    class Handler(BaseHTTPRequestHandler):
        server_version = "signoff"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition()
                self._answer(200, body, content_type)
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                ready, detail = readiness(pool)
                self._json(200 if ready else 503, detail)
            else:
                self._json(404, {"error": "not found: this port serves /metrics, /healthz and /readyz"})

        def _json(self, code: int, document: dict[str, Any]) -> None:
            self._answer(code, json.dumps(document).encode(), "application/json")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        pool.close()
        raise InvalidInput(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another --metrics-port") from None
    server.daemon_threads = True
    metrics.enable()
    db_metrics.register(pool)
    threading.Thread(target=server.serve_forever, name="signoff-metrics", daemon=True).start()
    return server
