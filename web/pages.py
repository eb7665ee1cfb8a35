"""The web inbox: server-rendered pages (Jinja2, autoescaped), no front-end build.

A GET never decides. A decision link (from Slack, mail or the webhook) opens a confirmation
page; only the POST from that page, carrying the session's CSRF token, records the decision.
Links do not name a reviewer (a Slack channel is shared), so the page asks the reviewer to
sign in with their token once; the session cookie (HttpOnly, SameSite=Lax) names a session
kept on the server (checkpoint/web_sessions.py): signing out, its 12-hour end and revoking
the token each end it, for every copy of the cookie.

Nothing a request carries is shown back as a message: after a decision the page shows one of
a fixed set of confirmations (FLASHES), chosen by a code in the query.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from checkpoint.signing import LinkError, csrf_ok, csrf_token, read_link
from checkpoint.tokens import Reviewer, authenticate, reviewer_by_id
from checkpoint.web_sessions import SESSION_HOURS, end_session, open_session, session_token
from web.thread_history import tokens_of
from web.app import HERE, WebContext, audit_refusal, thread_detail
from web.decide import HttpError, decide, load, valid_text, valid_thread_id

SESSION = "signoff_session"
LOGIN_NONCE = "signoff_login"
#: What `?done=CODE` may show on a thread's page after a decision: nothing else is ever shown.
FLASHES = {"approved": "approved", "rejected": "rejected", "handed-over": "handed over"}


def _visible(text: Any) -> str:
    """Control characters shown as \\xNN (newlines and tabs kept), as the CLI shows them."""
    return "".join(ch if ch in "\n\t" or ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(text or ""))


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 1440}d" if minutes >= 1440 else f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
_env.filters["visible"] = _visible
_env.filters["age"] = _age
_env.filters["tokens"] = tokens_of


def page(name: str, http_status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**values), status_code=http_status)


def error_page(status: int, message: str, reviewer: Reviewer | None = None) -> HTMLResponse:
    titles = {400: "Bad request", 401: "Sign-in failed", 403: "Refused", 404: "Not found", 409: "Cannot decide now",
              410: "Link expired", 412: "The content changed", 413: "Too large", 429: "Too many requests"}
    return page("error.html", status, title=titles.get(status, "Error"), message=message, reviewer=None, status=status)


async def current_reviewer(request: Request) -> Reviewer | None:
    ctx: WebContext = request.app.state.ctx
    session_id = request.cookies.get(SESSION, "")
    token_id = await run_in_threadpool(session_token, ctx.pool, session_id, ctx.clock()) if session_id else None
    return await run_in_threadpool(reviewer_by_id, ctx.pool, token_id) if token_id is not None else None


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    response.delete_cookie(SESSION)  # an ended session's cookie is not sent again
    return response


def safe_next(target: str) -> str:
    """Only a path on this server (never //other.host or a scheme): no open redirect."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/inbox"


async def refuse(request: Request, status: int, message: str, reviewer: Reviewer | None, thread_id: str | None = None) -> HTMLResponse:
    await run_in_threadpool(audit_refusal, request.app.state.ctx, request, thread_id, reviewer.name if reviewer else "anonymous", status, message)
    return error_page(status, message, reviewer)


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


# --- signing in ------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    nonce = request.cookies.get(LOGIN_NONCE) or secrets.token_urlsafe(16)
    response = page("login.html", next=safe_next(request.query_params.get("next", "/inbox")), csrf=csrf_token(ctx.key, nonce), reviewer=None)
    response.set_cookie(LOGIN_NONCE, nonce, httponly=True, samesite="lax", secure=ctx.secure_cookies, max_age=3600)
    return response


async def login(request: Request) -> Response:
    """Sign in with a reviewer token. The form carries a CSRF token bound to a nonce cookie, so
    another site cannot sign a reviewer in as someone else (whose name would then decide)."""
    ctx: WebContext = request.app.state.ctx
    form = await form_of(request)
    if not csrf_ok(ctx.key, request.cookies.get(LOGIN_NONCE, ""), form.get("csrf", "")):
        return await refuse(request, 403, "the sign-in form expired or came from another site: reload the page and sign in again", None)
    reviewer = await run_in_threadpool(authenticate, ctx.pool, form.get("token", "").strip())
    if reviewer is None:
        return await refuse(request, 401, "that token is not valid (wrong, or revoked): ask for a new one (`signoff token create NAME`)", None)
    session_id = await run_in_threadpool(open_session, ctx.pool, reviewer.token_id, ctx.clock())
    response = RedirectResponse(safe_next(form.get("next", "/inbox")), status_code=303)
    response.set_cookie(SESSION, session_id, httponly=True, samesite="lax", secure=ctx.secure_cookies, max_age=SESSION_HOURS * 3600)
    response.delete_cookie(LOGIN_NONCE)
    return response


async def logout(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    form = await form_of(request)
    if not csrf_ok(ctx.key, request.cookies.get(SESSION, ""), form.get("csrf", "")):
        return await refuse(request, 403, "refused: reload the page and try again", None)
    await run_in_threadpool(end_session, ctx.pool, request.cookies.get(SESSION, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION)
    return response


# --- the inbox -------------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return RedirectResponse("/inbox", status_code=303)


def read_list(ctx: WebContext, filters: Any, after: str | None) -> tuple[Any, dict[str, str]]:
    """A page of threads, and for those waiting at a gate with an approval chain, the stage
    they wait for (as `pending` shows it)."""
    from checkpoint import browse
    from checkpoint.approval_chain import waiting_for

    found = browse.threads_page(ctx.pool, filters, after=after)
    waiting = [r.thread_id for r in found.rows if r.status == "waiting"]
    return found, waiting_for(ctx.pool, waiting) if waiting else {}


async def inbox(request: Request) -> Response:
    """Threads by status (waiting first), filtered by graph and age, searched by id or a word
    of their summary, a keyset page at a time (checkpoint/browse.py)."""
    from checkpoint import browse
    from checkpoint.errors import InvalidInput

    reviewer = await current_reviewer(request)
    if reviewer is None:
        return to_login(request)
    ctx: WebContext = request.app.state.ctx
    query = request.query_params
    asked = {k: query.get(k, "") for k in ("status", "graph", "older", "newer", "q")}
    try:
        filters = browse.valid_filters(asked["status"] or "waiting", asked["graph"] or None, asked["older"] or None,
                                       asked["newer"] or None, asked["q"] or None)
        found, stages = await run_in_threadpool(read_list, ctx, filters, query.get("after") or None)
    except InvalidInput as exc:
        return await refuse(request, 400, str(exc), reviewer)
    now = ctx.clock()
    rows = [{"thread_id": r.thread_id, "graph": r.graph, "status": r.status, "gate": r.gate if r.status == "waiting" else None,
             "summary": r.summary, "age_seconds": (now - r.updated_at).total_seconds(), "waits_for": stages.get(r.thread_id),
             "deadline": r.deadline.isoformat() if r.deadline and r.status == "waiting" else None} for r in found.rows]
    keep = {k: v for k, v in asked.items() if v and k != "status"}
    return page("inbox.html", threads=rows, total=found.total, status=filters.status, lists=browse.LISTS, asked=asked,
                next_url=("/inbox?" + urlencode({**keep, "status": filters.status, "after": found.next_key})) if found.next_key else None,
                first_url=("/inbox?" + urlencode({**keep, "status": filters.status})) if query.get("after") else None,
                tab_url=lambda status: "/inbox?" + urlencode({**keep, "status": status}),
                reviewer=reviewer, csrf=csrf_token(ctx.key, request.cookies[SESSION]), now=now)


async def thread_page(request: Request) -> Response:
    """The thread now (and its decision forms at a gate), its timeline, every draft a reviewer
    saw with what changed, what was sent or published, and, while it runs, its live progress."""
    from checkpoint.events import last_id
    from web.thread_history import thread_history

    reviewer = await current_reviewer(request)
    if reviewer is None:
        return to_login(request)
    ctx: WebContext = request.app.state.ctx
    tid = request.path_params["thread_id"]

    def read() -> tuple[dict[str, Any], Any, int]:
        runner, review = load(ctx.pool, tid)
        return thread_detail(ctx, tid), thread_history(ctx.pool, runner, review), last_id(ctx.pool, tid)

    try:
        detail, past, after = await run_in_threadpool(read)
    except HttpError as exc:
        return await refuse(request, exc.status, str(exc), reviewer, tid)
    moving = detail["status"] in ("queued", "running") or detail["job_active"]
    return page("thread.html", t=detail, h=past, reviewer=reviewer, csrf=csrf_token(ctx.key, request.cookies[SESSION]),
                moving=moving, stream_url=f"/threads/{quote(tid, safe='')}/progress?after={after}",
                flash=FLASHES.get(request.query_params.get("done", ""), ""))


async def thread_progress(request: Request) -> Response:
    """Server-sent events of a thread's progress (web/live.py), for a signed-in reviewer."""
    from checkpoint import threads
    from web.live import progress_stream

    reviewer = await current_reviewer(request)
    tid = request.path_params["thread_id"]
    if reviewer is None:
        return await refuse(request, 401, "sign in first: your session ended", None, tid)
    pool = request.app.state.ctx.pool
    try:
        valid_thread_id(tid)
        if await run_in_threadpool(threads.get, pool, tid) is None:
            raise HttpError(404, f"no thread {tid!r}")
    except HttpError as exc:
        return await refuse(request, exc.status, str(exc), reviewer, tid)
    return progress_stream(request, pool, tid)


async def inbox_decision(request: Request) -> Response:
    """POST from the thread page's Approve / Reject forms."""
    reviewer = await current_reviewer(request)
    tid = request.path_params["thread_id"]
    if reviewer is None:
        return await refuse(request, 401, "sign in first: your session ended", None, tid)
    ctx: WebContext = request.app.state.ctx
    form = await form_of(request)
    if not csrf_ok(ctx.key, request.cookies.get(SESSION, ""), form.get("csrf", "")):
        return await refuse(request, 403, "this form expired or came from another site: reload the thread and decide again", reviewer, tid)
    action = request.path_params["action"]
    if action not in ("approve", "reject", "handover"):
        return await refuse(request, 404, "no such page", reviewer, tid)
    verdict = "approved" if action == "approve" else "rejected"
    try:
        valid_thread_id(tid)
        note = valid_text(form.get("note") if verdict == "approved" else form.get("feedback"), "note" if verdict == "approved" else "feedback",
                          required=action == "reject")
        await run_in_threadpool(lambda: decide(ctx.pool, tid, verdict, actor=reviewer.name, note=note,
                                               expect=form.get("expect") or None, now=ctx.clock(), handover=action == "handover",
                                               token_id=reviewer.token_id))
    except HttpError as exc:
        return await refuse(request, exc.status, str(exc), reviewer, tid)
    return RedirectResponse(f"/threads/{tid}?done={'handed-over' if action == 'handover' else verdict}", status_code=303)


# --- decision links --------------------------------------------------------------------------------


async def confirm(request: Request) -> Response:
    """GET shows the link's decision for confirmation (and decides nothing); POST decides."""
    ctx: WebContext = request.app.state.ctx
    tid, token = request.path_params["thread_id"], request.path_params["token"]
    reviewer = await current_reviewer(request)
    try:
        valid_thread_id(tid)
        link = read_link(ctx.key, token, thread_id=tid, now=ctx.clock())
    except (LinkError, HttpError) as exc:
        return await refuse(request, exc.status, str(exc), reviewer, tid)
    if reviewer is None:
        if request.method == "POST":
            return await refuse(request, 401, "sign in first: your session ended", None, tid)
        return to_login(request)
    verdict = "approved" if link.action == "approve" else "rejected"
    if request.method != "POST":  # GET and HEAD: show, never decide
        try:
            _, review = await run_in_threadpool(load, ctx.pool, tid)
        except HttpError as exc:
            return await refuse(request, exc.status, str(exc), reviewer, tid)
        stale = None
        if review.visit != link.visit or review.digest != link.digest:
            from checkpoint.decisions import decision_for

            used = await run_in_threadpool(decision_for, ctx.pool, tid, link.visit)
            stale = (f"This link was already used: decided by {used.actor} at {used.decided_at:%Y-%m-%d %H:%M %Z} ({used.verdict})."
                     if used else "This link is for an earlier draft; open the thread for the current one.")
            return await refuse(request, 409, stale, reviewer, tid)
        return page("confirm.html", review=review, link=link, verdict=verdict, reviewer=reviewer,
                    csrf=csrf_token(ctx.key, request.cookies[SESSION]), action_url=request.url.path)
    form = await form_of(request)
    if not csrf_ok(ctx.key, request.cookies.get(SESSION, ""), form.get("csrf", "")):
        return await refuse(request, 403, "this form expired or came from another site: open the link again", reviewer, tid)
    try:
        note = valid_text(form.get("feedback") if verdict == "rejected" else form.get("note"), "feedback" if verdict == "rejected" else "note",
                          required=verdict == "rejected")
        await run_in_threadpool(lambda: decide(ctx.pool, tid, verdict, actor=reviewer.name, note=note or f"{link.action} link",
                                               expect=link.digest, visit=link.visit, now=ctx.clock(), token_id=reviewer.token_id))
    except HttpError as exc:
        return await refuse(request, exc.status, str(exc), reviewer, tid)
    return RedirectResponse(f"/threads/{tid}?done={verdict}", status_code=303)


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/inbox", inbox),
        Route("/threads/{thread_id}", thread_page),
        Route("/threads/{thread_id}/progress", thread_progress, methods=["GET"]),
        Route("/threads/{thread_id}/{action:str}", inbox_decision, methods=["POST"]),
        Route("/threads/{thread_id}/confirm/{token}", confirm, methods=["GET", "POST"]),
    ]

