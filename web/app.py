"""`signoff serve`: the HTTP API (/api/...) and the web inbox, one Starlette app.

Starlette, not FastAPI: a dozen routes with hand-checked bodies (the CLI's bounds and
messages) need no schema layer, and Starlette (with uvicorn) already comes with the local
model's server. Handlers are async and run every database call in the thread pool
(psycopg's sync pool, shared with the rest of Signoff).

Who decides is never a name the caller types: the API takes a reviewer token (Bearer), the
pages a session opened by signing in with that token; the decision's actor is the token's
owner. Refusals (401, 404, 409, 412, 413, bad links) are audited as `http_refused`: one row
each when a reviewer is known, one counted row per source and minute before anyone signed in,
which is also what rate-limits a source (web/refusals.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from checkpoint.audit import record_event
from checkpoint.tokens import Reviewer, authenticate
from web.decide import HttpError, decide, load, valid_text, valid_thread_id
from web.refusals import RefusalLimit, audit_anonymous

HERE = Path(__file__).resolve().parent
#: Largest request body accepted (a 64 KiB note plus form overhead); larger is 413 unread.
MAX_BODY = 160 * 1024
STATUSES = ("queued", "running", "waiting", "finished", "failed", "interrupted")


@dataclass
class WebContext:
    pool: ConnectionPool
    key: bytes
    public_url: str
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    refusals: RefusalLimit = field(default_factory=RefusalLimit)

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")


def audit_refusal(ctx: WebContext, request: Request, thread_id: str | None, actor: str, status: int, reason: str) -> None:
    """Record a refused request (never its body or a token)."""
    if actor == "anonymous":
        return audit_anonymous(ctx.pool, ctx.refusals, request.scope, status, reason, ctx.clock())
    tid = thread_id if thread_id and valid_id(thread_id) else "-"
    record_event(ctx.pool, tid, actor, "http_refused",
                 {"status": status, "reason": reason[:200], "method": request.method, "path": request.url.path[:200]})


def valid_id(thread_id: str) -> bool:
    try:
        valid_thread_id(thread_id)
        return True
    except HttpError:
        return False


class BodyLimit:
    """Refuse bodies over MAX_BODY with 413 before reading them. A body must declare its
    Content-Length (the HTTP server then never delivers more than declared); a chunked one is
    refused with 411. Hand-written: Starlette has no body-size setting, and uvicorn's
    `--limit-*` options bound concurrency, not body size."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
                return await refuse_body(scope, send, 413, f"the request body is over {self.limit} bytes", self.app.state.ctx)
            if declared is None and b"transfer-encoding" in headers:
                return await refuse_body(scope, send, 411, "send the body with a Content-Length", self.app.state.ctx)
        await self.app(scope, receive, send)


async def refuse_body(scope: dict[str, Any], send: Any, status: int, message: str, ctx: "WebContext | None" = None) -> None:
    """Answer without reading the body (nor checking who sent it), and audit the attempt."""
    if ctx is not None:
        await run_in_threadpool(audit_anonymous, ctx.pool, ctx.refusals, scope, status, message, ctx.clock())
    from web.langgraph_api import PREFIX

    under_langgraph = str(scope.get("path", "")).startswith(PREFIX + "/")  # LangGraph's clients read `detail`
    body = {"detail": message} if under_langgraph else {"error": message, "status": status}
    await JSONResponse(body, status_code=status)(scope, None, send)  # type: ignore[arg-type]


# --- the JSON API ---------------------------------------------------------------------------------


def api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def api(handler: Callable[[WebContext, Request, Reviewer], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Bearer-token authentication and error mapping for one API route."""

    async def endpoint(request: Request) -> Response:
        ctx: WebContext = request.app.state.ctx
        tid = request.path_params.get("thread_id")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        reviewer = await run_in_threadpool(authenticate, ctx.pool, token.strip()) if scheme.lower() == "bearer" and token else None
        if reviewer is None:
            reason = "missing bearer token" if not header else "bad or revoked token"
            await run_in_threadpool(audit_refusal, ctx, request, tid, "anonymous", 401, reason)
            response = api_error(401, f"{reason}: send `Authorization: Bearer <token>` (create one with `signoff token create NAME`)")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return await handler(ctx, request, reviewer)
        except HttpError as exc:
            await run_in_threadpool(audit_refusal, ctx, request, tid, reviewer.name, exc.status, str(exc))
            return api_error(exc.status, str(exc))

    return endpoint


def thread_summary(row: Any, now: datetime) -> dict[str, Any]:
    return {"thread_id": row.thread_id, "graph": row.graph, "status": row.status, "gate": row.gate if row.status == "waiting" else None,
            "summary": row.summary, "age_seconds": round((now - row.updated_at).total_seconds(), 1),
            "deadline": row.deadline.isoformat() if row.deadline and row.status == "waiting" else None,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}


def list_threads(ctx: WebContext, status: str) -> list[dict[str, Any]]:
    from checkpoint import threads

    now = ctx.clock()
    out = []
    for row in threads.list_by_status(ctx.pool, status):
        item = thread_summary(row, now)
        if status == "waiting":
            item["digest"] = getattr(row, "digest", None) or load(ctx.pool, row.thread_id)[1].digest
        out.append(item)
    return out


def thread_detail(ctx: WebContext, thread_id: str) -> dict[str, Any]:
    from checkpoint import jobs, notifications
    from checkpoint.audit import events_of
    from checkpoint.decisions import decisions_of

    from observability.usage import model_prices, step_json, totals

    runner, review = load(ctx.pool, thread_id)
    calls = [c for c in review.values.get("calls") or [] if isinstance(c, dict)]
    prices = model_prices()
    return {
        **thread_summary(review.row, ctx.clock()), "review": review.content if review.gate else None,
        "gate": review.gate, "job_active": jobs.active_job(ctx.pool, thread_id) is not None,
        "digest": review.digest or None, "error": review.values.get("error") or None,
        "hands_over": review.gate is not None and runner.spec.hands_over,
        "steps": [step_json(c, prices) for c in calls], "tokens": totals(calls, prices),
        "decisions": [{**d, "decided_at": d["decided_at"].isoformat()} for d in decisions_of(ctx.pool, thread_id)],
        "audit": [{**e, "at": e["at"].isoformat()} for e in events_of(ctx.pool, thread_id)],
        "notifications": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in n.items()} for n in notifications.of_thread(ctx.pool, thread_id)],
    }


async def api_list(ctx: WebContext, request: Request, reviewer: Reviewer) -> Response:
    status = request.query_params.get("status", "waiting")
    if status not in STATUSES:
        raise HttpError(400, f"status must be one of {', '.join(STATUSES)}")
    return JSONResponse({"threads": await run_in_threadpool(list_threads, ctx, status)})


async def api_show(ctx: WebContext, request: Request, reviewer: Reviewer) -> Response:
    return JSONResponse(await run_in_threadpool(thread_detail, ctx, request.path_params["thread_id"]))


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def api_decision(verdict: str) -> Callable[[WebContext, Request, Reviewer], Awaitable[Response]]:
    async def handler(ctx: WebContext, request: Request, reviewer: Reviewer) -> Response:
        tid = valid_thread_id(request.path_params["thread_id"])
        body = await json_body(request)
        expect = body.get("expect")
        if expect is not None and not isinstance(expect, str):
            raise HttpError(400, "expect must be the digest string shown with the thread")
        if verdict == "approved":
            if not expect:
                raise HttpError(400, "approve needs \"expect\": the digest of the content you reviewed (GET /api/threads/ID)")
            note = valid_text(body.get("note"), "note", required=False)
            handover = False
        else:
            handover = body.get("handover", False)
            if not isinstance(handover, bool):
                raise HttpError(400, "handover must be true or false: true gives a support thread to a specialist")
            note = valid_text(body.get("feedback"), "feedback", required=not handover)
        result = await run_in_threadpool(lambda: decide(ctx.pool, tid, verdict, actor=reviewer.name, note=note, expect=expect,
                                                        now=ctx.clock(), handover=handover, token_id=reviewer.token_id))
        return JSONResponse(result, status_code=202)

    return handler


def create_app(ctx: WebContext) -> Any:
    from web import langgraph_api, pages

    routes = [
        Route("/api/threads", api(api_list)),
        Route("/api/threads/{thread_id}", api(api_show)),
        Route("/api/threads/{thread_id}/approve", api(api_decision("approved")), methods=["POST"]),
        Route("/api/threads/{thread_id}/reject", api(api_decision("rejected")), methods=["POST"]),
        langgraph_api.mount(),  # LangGraph's API, for its SDK and UIs
        *pages.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.ctx = ctx
    from web.guards import RefusalGate, SecurityHeaders

    return SecurityHeaders(RefusalGate(BodyLimit(app), ctx))
