"""What wraps every request of `signoff serve`: the browser protections on every response, and
the 429 for a source refused too often (web/refusals.py).

Hand-written ASGI wrappers (a dozen lines each): Starlette ships no security-header or
rate-limit middleware, and these must also cover the answers given before routing (413, 429).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse

from web.refusals import audit_anonymous, source_of

#: The pages load only their own stylesheet and script files (no inline script, so none can be
#: injected; the one script follows a running thread's progress from this server), no frames
#: (no clickjacking of the Approve button), forms post only here, and no referrer leaves with a
#: link's token in it.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_NAMES = {name for name, _ in SECURITY_HEADERS}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SecurityHeaders:
    """Add SECURITY_HEADERS to every HTTP response, whatever answered it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": kept + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RefusalGate:
    """Answer 429 (with Retry-After) to a source over its limit of refused anonymous requests,
    before anything else runs; static files are exempt (they cost nothing and decide nothing)."""

    def __init__(self, app: Any, ctx: Any) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope.get("path", "")).startswith("/static/"):
            now = self.ctx.clock()
            wait = self.ctx.refusals.retry_after(source_of(scope), now)
            if wait is not None:
                message = f"too many refused requests from your address: try again in {wait} s"
                times = self.ctx.refusals.refused_again(source_of(scope), now)
                if times:
                    await run_in_threadpool(audit_anonymous, self.ctx.pool, self.ctx.refusals, scope, 429, message, now, times)
                response = too_many(str(scope.get("path", "")), message)
                response.headers["Retry-After"] = str(wait)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def too_many(path: str, message: str) -> Any:
    from web.langgraph_api import PREFIX

    if path.startswith(PREFIX + "/"):  # LangGraph's API: its clients read `detail`
        return JSONResponse({"detail": message}, status_code=429)
    if path.startswith("/api/"):
        return JSONResponse({"error": message, "status": 429}, status_code=429)
    from web.pages import error_page

    return error_page(429, message)
