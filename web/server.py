"""Running the web app: `signoff serve` (uvicorn in this process).

The server records decisions and queues the thread; a separate `signoff worker` (any number,
any machine) runs it on and delivers the notifications. A browser request never runs a graph.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

LOOPBACK_NAMES = {"localhost"}
#: What the `web` extra installs that `serve` imports (python-multipart is checked as Starlette finds it).
WEB_MODULES = ("starlette", "uvicorn", "jinja2")
INSTALL_WEB = 'pip install -e ".[web]" from the Signoff checkout (or signoff[web])'


def require_web_extra() -> None:
    """Refuse to start without the `web` extra, in one line naming it. Without it the server
    would start, and its first form (the sign-in) would answer a bare 500: Starlette only
    notices the missing form parser when it parses one."""
    import importlib

    from checkpoint.errors import Unavailable

    missing = []
    for name in WEB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if "starlette" not in missing:
        from starlette import requests

        if requests.parse_options_header is None:  # Starlette's own test for python-multipart
            missing.append("python-multipart")
    if missing:
        raise Unavailable(f"`signoff serve` needs the web extra ({', '.join(missing)} not installed): {INSTALL_WEB}")


#: Requests whose database work runs at once (the threads Starlette runs handlers' blocking
#: calls in); the rest wait for a thread, not for a connection.
REQUEST_THREADS = 24


def pool_size(request_threads: int = REQUEST_THREADS) -> int:
    """Connections for `serve`: one per request thread (none holds two at once), plus one for
    what runs outside them."""
    return request_threads + 1


class RequestThreads:
    """ASGI wrapper that bounds the threads running the handlers' database work to
    `threads` (anyio's default is 40), set once in the server's event loop: with the pool sized
    to match, a request waits for a thread, never for a connection past the pool's timeout."""

    def __init__(self, app: Any, threads: int) -> None:
        self.app, self.threads, self.bounded = app, threads, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.bounded:
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            self.bounded = True
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(pool: Any, home: Any, host: str, port: int, *, log: Callable[[str], None], warn: Callable[[str], None]) -> None:
    import os

    import uvicorn

    from checkpoint.notifications import DEFAULT_PORT, DEFAULT_PUBLIC_URL
    from checkpoint.signing import secret_key
    from web.app import WebContext, create_app

    public = (os.environ.get("SIGNOFF_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/")
    from observability.web import Observed

    # /metrics, /healthz, /readyz and a log line per request, around the whole app
    app = Observed(RequestThreads(create_app(WebContext(pool=pool, key=secret_key(home), public_url=public)), REQUEST_THREADS), pool, log)
    pool.resize(min_size=pool.min_size, max_size=max(pool.max_size, pool_size()))
    import threading

    from checkpoint.notifications import start_run_webhooks

    start_run_webhooks(pool, os.environ, threading.Event(), log=log)  # runs' webhooks, even those left by a killed serve
    if not is_loopback(host):
        warn(f"serving on {host}, beyond this machine, without TLS: put a TLS-terminating proxy in front "
             "(tokens and session cookies travel in every request)")
    if not os.environ.get("SIGNOFF_PUBLIC_URL") and port != DEFAULT_PORT:
        # workers send notifications too and cannot know this port: the one setting says where links go
        warn(f"links in notifications point at {public}, not this port: set SIGNOFF_PUBLIC_URL=http://{host}:{port} "
             "for serve and every worker")
    log(f"serving on http://{host}:{port} (inbox /inbox, API /api/threads, LangGraph API /langgraph, /metrics, /healthz, /readyz); "
        f"links point at {public}; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
