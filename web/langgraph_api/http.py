"""What every route of LangGraph's API shares: the reviewer token (LangGraph's SDK sends it
as `x-api-key`; `Authorization: Bearer` works too), errors in LangGraph's shape
(`{"detail": ...}` with its status codes, never a traceback), JSON bodies, and JSON that
carries LangChain messages and datetimes."""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from checkpoint.errors import Conflict, InvalidInput, NotFound, SignoffError, Unavailable
from checkpoint.tokens import Reviewer, authenticate
from web.decide import HttpError

log = logging.getLogger("signoff.langgraph_api")

Handler = Callable[[Request, Reviewer], Awaitable[Response]]


#: database work of this API at once, in the thread pool. Some operations take a second
#: connection while holding one (a decision locks its thread row and reads the checkpoint), so
#: the API's own pool holds twice as many, and a little more for the run tracker.
DB_CONCURRENCY = 6
API_POOL_SIZE = 2 * DB_CONCURRENCY + 2
_executors: dict[int, Any] = {}
_pools: dict[str, Any] = {}
_pools_mutex = __import__("threading").Lock()


def api_pool(pool: Any) -> Any:
    """The API's own connection pool on serve's database (opened once): its clients' runs,
    waits and streams never take the connections the inbox and Signoff's own API need."""
    opened = _pools.get(pool.conninfo)
    if opened is not None:  # every request after the first: no lock, no database
        return opened
    with _pools_mutex:
        if pool.conninfo not in _pools:
            from checkpoint.database import open_pool

            _pools[pool.conninfo] = open_pool(pool.conninfo, max_size=API_POOL_SIZE)
        return _pools[pool.conninfo]


async def run_in_threadpool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)` in a worker thread (with the caller's context variables), at
    most DB_CONCURRENCY at once per event loop: the loop's own pool of that many threads.

    asyncio's executor hand-off, not anyio's: anyio's cancel scopes and limiter cost about a
    tenth of a busy server's CPU across the several database calls of each request. A call
    whose request is cancelled still runs to its end (its connection goes back to the pool)."""
    import asyncio
    import contextvars
    import functools
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    executor = _executors.get(id(loop))
    if executor is None:
        executor = _executors.setdefault(id(loop), ThreadPoolExecutor(DB_CONCURRENCY, thread_name_prefix="signoff-langgraph-api"))
    return await loop.run_in_executor(executor, contextvars.copy_context().run, functools.partial(func, *args, **kwargs))


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=plain, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def plain(value: Any) -> Any:
    """JSON for what state and rows hold: the same plain forms as `show --json` gives them."""
    from runtime.interrupts import _default

    return _default(value)


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


def detail(status: int, message: str) -> Response:
    return Json({"detail": message}, status_code=status)


def status_of(exc: Exception) -> int:
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, Unavailable):
        return 503
    return 500


def presented_token(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run, and map every error to LangGraph's shape. A refusal is audited
    (never its body or a token) and changes nothing else."""

    async def endpoint(request: Request) -> Response:
        from web.app import audit_refusal

        from web.langgraph_api import tracker

        ctx = request.scope["app"].state.ctx
        request.state.pool = _pools.get(ctx.pool.conninfo) or await run_in_threadpool(api_pool, ctx.pool)
        tracker.ensure_started(request.state.pool)  # runs left open by a restart are finished and their webhooks posted
        tid = request.path_params.get("thread_id")
        token = presented_token(request)
        reviewer = await run_in_threadpool(authenticate, ctx.pool, token) if token else None
        if reviewer is None:
            reason = "missing API key" if not token else "bad or revoked API key"
            await run_in_threadpool(audit_refusal, ctx, request, tid, "anonymous", 401, reason)
            response = detail(401, f"{reason}: send `x-api-key: <token>` (create one with `signoff token create NAME`)")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return await handler(request, reviewer)
        except (HttpError, SignoffError) as exc:
            status = status_of(exc)
            await run_in_threadpool(audit_refusal, ctx, request, tid, reviewer.name, status, str(exc))
            return detail(status, str(exc))
        except Exception as exc:  # noqa: BLE001 - one line to the client, the rest to the log
            log.exception("LangGraph API %s %s failed", request.method, request.url.path)
            return detail(500, f"internal error ({exc.__class__.__name__}): see the server's log")

    return endpoint


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(422, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(422, "the body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """body[name] if it has the expected JSON type, else 422 naming the field."""
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise HttpError(422, f"{name} must be {names.replace('dict', 'an object').replace('list', 'an array').replace('str', 'a string')}")
    return value


def paging(body: dict[str, Any], default: int = 10) -> tuple[int, int]:
    limit, offset = field(body, "limit", int, default), field(body, "offset", int, 0)
    if not 0 < limit <= 1000 or offset < 0:
        raise HttpError(422, "limit must be 1-1000 and offset 0 or more")
    return limit, offset


def unknown_route(served: list[Any]) -> Any:
    """The last route: a path or method this API does not serve answers in LangGraph's shape
    (404, or 405 for a served path asked with another method), not as plain text."""
    from starlette.routing import Match, Route

    async def unknown(request: Request) -> Response:
        if any(r.matches(request.scope)[0] == Match.PARTIAL for r in served):
            return detail(405, f"{request.method} is not served for {request.url.path}")
        return detail(404, f"{request.url.path} is not served by this API")

    return Route("/{path:path}", unknown, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
