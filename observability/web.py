"""`signoff serve`'s operational endpoints and request log, wrapped around the web app as one
ASGI layer: /metrics, /healthz and /readyz answered here (no token: they show counts, never
thread content), and one log line per request with its status and duration."""

from __future__ import annotations

import re
import time
from typing import Any, Awaitable, Callable

_THREAD_IN_PATH = re.compile(r"^/(?:api/)?threads/([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:/|$)")
OWN_PATHS = ("/metrics", "/healthz", "/readyz")
#: A signed decision link carries its capability in the path: never written to a log.
_SIGNED_LINK = re.compile(r"(/confirm/)[^/]+")


class Observed:
    """The app, with /metrics, /healthz, /readyz and a log line per HTTP request."""

    def __init__(self, app: Any, pool: Any, log: Callable[..., None]) -> None:
        from observability import db_metrics, metrics

        self.app, self.pool, self.log = app, pool, log
        metrics.enable()
        db_metrics.register(pool)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if scope["path"] in OWN_PATHS and scope["method"] in ("GET", "HEAD"):
                await self._own(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            self._log(scope, status["code"], time.monotonic() - started)

    async def _own(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, Response

        from observability import metrics
        from observability.health import readiness

        path = scope["path"]
        if path == "/metrics":
            body, content_type = await run_in_threadpool(metrics.exposition)
            response: Any = Response(body, media_type=content_type)
        elif path == "/healthz":
            response = JSONResponse({"status": "ok"})
        else:
            ready, detail = await run_in_threadpool(readiness, self.pool)
            response = JSONResponse(detail, status_code=200 if ready else 503)
        await response(scope, receive, send)

    def _log(self, scope: dict[str, Any], code: int, seconds: float) -> None:
        path = _SIGNED_LINK.sub(r"\1***", str(scope.get("path", "")))[:200]
        match = _THREAD_IN_PATH.match(path)
        method = str(scope.get("method", ""))
        try:
            self.log(f"{method} {path} {code} {seconds * 1000:.0f}ms", event="http_request", level="error" if code >= 500 else "info",
                     thread_id=match.group(1) if match else None, method=method, path=path, status=code,
                     duration_ms=round(seconds * 1000, 1))
        except Exception:  # noqa: BLE001 - a log that cannot be written never fails the request
            pass
