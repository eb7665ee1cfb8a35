"""The runs routes: create (background), wait, stream, join, join_stream, get, list, cancel."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from checkpoint.tokens import Reviewer
from web.decide import HttpError, valid_thread_id
from web.langgraph_api import runs, tracker
from web.langgraph_api.http import run_in_threadpool, Json, body_of, route
from web.langgraph_api.stream import run_events

#: seconds between looks at a run when no notification wakes the request
WAIT_POLL = 1.0


def pool_of(request: Request) -> Any:
    return request.state.pool


async def _create(request: Request, reviewer: Reviewer) -> dict[str, Any]:
    body = await body_of(request)
    pool = pool_of(request)
    tracker.ensure_started(pool)
    run = await run_in_threadpool(runs.create_run, pool, reviewer.name, request.path_params.get("thread_id"), body,
                                token_id=reviewer.token_id)
    tracker.wake()
    return run


async def create(request: Request, reviewer: Reviewer) -> Response:
    run = await _create(request, reviewer)
    return Json(run, headers={"Content-Location": f"/threads/{run['thread_id']}/runs/{run['run_id']}"})


async def until_done(pool: Any, thread_id: str, run_id: str, *, with_result: bool = True
                     ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    async with tracker.WAITERS.watching(thread_id) as changed:
        return await settled(pool, await run_in_threadpool(runs.get_run, pool, thread_id, run_id), changed, with_result=with_result)


async def settled(pool: Any, run: dict[str, Any], changed: Any, *, with_result: bool = True
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run once it has ended, read again each time its thread moves, and `with_result`
    its result when that read found it ended well (read in the same request thread, one
    hand-off fewer); `run` was read after `changed` began watching its thread, so no move
    in between is missed."""
    result = None
    while run["status"] not in runs.FINAL:
        await changed(WAIT_POLL)
        run, result = await run_in_threadpool(_look, pool, run["thread_id"], run["run_id"], with_result)
    return run, result


def _look(pool: Any, thread_id: str, run_id: str, with_result: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    run = runs.get_run(pool, thread_id, run_id)
    ended_well = with_result and run["status"] in runs.FINAL and run["status"] != "error"
    return run, runs.result_of(pool, thread_id, run["assistant_id"]) if ended_well else None


async def outcome(pool: Any, run: dict[str, Any], result: dict[str, Any] | None = None) -> dict[str, Any]:
    if run["status"] == "error":
        rows = await run_in_threadpool(runs.run_rows, pool, run["thread_id"], run_id=run["run_id"], limit=1)
        message = (rows[0].get("error") or rows[0].get("job_result") or "the run failed") if rows else "the run failed"
        return {"__error__": {"error": "RunError", "message": message}}
    if result is not None:
        return result
    return await run_in_threadpool(runs.result_of, pool, run["thread_id"], run["assistant_id"])


async def wait(request: Request, reviewer: Reviewer) -> Response:
    pool = pool_of(request)
    thread_id = request.path_params.get("thread_id")
    if thread_id is None:  # a new thread: its id is known once the run is created
        run = await _create(request, reviewer)
        thread_id = run["thread_id"]
    else:
        run = None
    # watched from before the run exists (the run as created is the first look at it), and until
    # its output is read: with on_completion "delete" its thread goes only after that
    async with tracker.WAITERS.watching(thread_id) as changed:
        if run is None:
            run = await _create(request, reviewer)
        else:
            run = await run_in_threadpool(runs.get_run, pool, thread_id, run["run_id"])
        done, result = await settled(pool, run, changed)
        answer = await outcome(pool, done, result)
    return Json(answer, headers={"Content-Location": f"/threads/{run['thread_id']}/runs/{run['run_id']}"})


def modes_of(value: Any) -> list[str]:
    modes = [value] if isinstance(value, str) else list(value or ["values"])
    return ["messages" if m == "messages-tuple" else m for m in modes]


async def stream(request: Request, reviewer: Reviewer) -> Response:
    run = await _create(request, reviewer)
    modes = modes_of(run["kwargs"].get("stream_mode"))
    return StreamingResponse(run_events(pool_of(request), run["thread_id"], run["run_id"], modes,
                                        subgraphs=bool(run["kwargs"].get("stream_subgraphs"))), media_type="text/event-stream",
                             headers={"Content-Location": f"/threads/{run['thread_id']}/runs/{run['run_id']}", "Cache-Control": "no-store"})


async def join_stream(request: Request, reviewer: Reviewer) -> Response:
    pool = pool_of(request)
    tid, rid = request.path_params["thread_id"], request.path_params["run_id"]
    run = await run_in_threadpool(runs.get_run, pool, tid, rid)
    asked = request.query_params.getlist("stream_mode")
    modes = modes_of(asked or run["kwargs"].get("stream_mode"))
    last = request.headers.get("last-event-id", "")
    return StreamingResponse(run_events(pool, tid, run["run_id"], modes, skip=int(last) if last.isdigit() else 0,
                                        subgraphs=bool(run["kwargs"].get("stream_subgraphs"))),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def join(request: Request, reviewer: Reviewer) -> Response:
    pool = pool_of(request)
    thread_id, run_id = request.path_params["thread_id"], request.path_params["run_id"]
    async with tracker.WAITERS.watching(thread_id) as changed:  # until the output is read, as wait
        done, result = await settled(pool, await run_in_threadpool(runs.get_run, pool, thread_id, run_id), changed)
        answer = await outcome(pool, done, result)
    return Json(answer)


async def get(request: Request, reviewer: Reviewer) -> Response:
    return Json(await run_in_threadpool(runs.get_run, pool_of(request), request.path_params["thread_id"], request.path_params["run_id"]))


async def listing(request: Request, reviewer: Reviewer) -> Response:
    pool = pool_of(request)
    tid = valid_thread_id(request.path_params["thread_id"])
    q = request.query_params
    try:
        limit, offset = int(q.get("limit", "10")), int(q.get("offset", "0"))
    except ValueError:
        raise HttpError(422, "limit and offset must be numbers") from None
    if not 0 < limit <= 1000 or offset < 0:
        raise HttpError(422, "limit must be 1-1000 and offset 0 or more")
    from web.langgraph_api.threads import thread_row

    def find() -> list[dict[str, Any]]:
        thread_row(pool, tid)
        return [runs.as_run(r) for r in runs.run_rows(pool, tid, limit=limit, offset=offset, status=q.get("status"))]

    return Json(await run_in_threadpool(find))


async def cancel(request: Request, reviewer: Reviewer) -> Response:
    pool = pool_of(request)
    tid, rid = request.path_params["thread_id"], request.path_params["run_id"]
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise HttpError(422, "action must be interrupt or rollback")

    def stop() -> None:
        rows = runs.run_rows(pool, valid_thread_id(tid), run_id=runs.valid_run_id(rid), limit=1)
        if not rows:
            raise HttpError(404, f"thread {tid} has no run {rid}")
        if runs.live_status(rows[0]) in runs.FINAL:
            raise HttpError(409, f"run {rid} has already ended ({runs.live_status(rows[0])})")
        runs.cancel(pool, rows[0], reviewer.name, rollback=action == "rollback")

    await run_in_threadpool(stop)
    tracker.wake()
    if request.query_params.get("wait", "false").lower() in ("true", "1"):
        await until_done(pool, tid, rid, with_result=False)
    return Response(status_code=202)


def routes() -> list[Route]:
    return [
        Route("/threads/{thread_id}/runs", route(create), methods=["POST"]),
        Route("/threads/{thread_id}/runs", route(listing), methods=["GET"]),
        Route("/threads/{thread_id}/runs/wait", route(wait), methods=["POST"]),
        Route("/threads/{thread_id}/runs/stream", route(stream), methods=["POST"]),
        Route("/threads/{thread_id}/runs/{run_id}", route(get), methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/join", route(join), methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/stream", route(join_stream), methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/cancel", route(cancel), methods=["POST"]),
        Route("/runs", route(create), methods=["POST"]),
        Route("/runs/wait", route(wait), methods=["POST"]),
        Route("/runs/stream", route(stream), methods=["POST"]),
    ]
