"""Threads as LangGraph's API shows them. A Signoff thread (started from the CLI, the SDK or
a worker) is a LangGraph thread; one made by `threads.create` exists here before its first
run, with its metadata (api_threads). Status: `busy` while a job waits or runs for it,
`interrupted` while it waits at a gate, `error` if it failed, else `idle`. State and history
are read from the thread's checkpoints by its own graph, as LangGraph's server reads them."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from checkpoint.tokens import Reviewer
from web.decide import HttpError, valid_thread_id
from web.langgraph_api.http import run_in_threadpool, Json, body_of, field, paging, route

STATUSES = ("idle", "busy", "interrupted", "error")

#: every thread, API-made or not, with its merged metadata and LangGraph status
_THREADS = """
SELECT coalesce(a.thread_id, t.thread_id) AS thread_id,
       coalesce(a.metadata, '{}'::jsonb) || CASE WHEN t.graph IS NULL THEN '{}'::jsonb
            ELSE jsonb_build_object('graph_id', t.graph) END AS metadata,
       least(a.created_at, t.created_at) AS created_at, greatest(a.updated_at, t.updated_at) AS updated_at,
       t.graph, t.status AS signoff_status, a.thread_id IS NOT NULL AS api,
       CASE WHEN t.status IN ('queued', 'running')
                 OR EXISTS (SELECT 1 FROM jobs j WHERE j.thread_id = t.thread_id AND j.status IN ('todo', 'doing')
                            AND NOT (j.status = 'doing' AND EXISTS (SELECT 1 FROM progress_events e WHERE e.thread_id = j.thread_id
                                     AND e.event->>'event' = 'stop' AND e.event->>'job' = j.id::text)))
                 OR EXISTS (SELECT 1 FROM api_runs r WHERE r.thread_id = coalesce(a.thread_id, t.thread_id)
                            AND r.status IN ('pending', 'running') AND r.job_id IS NULL) THEN 'busy'
            WHEN t.status = 'waiting' THEN 'interrupted'
            WHEN t.status = 'failed' THEN 'error'
            ELSE 'idle' END AS status
FROM {source}
"""
#: every thread; for given ids, only those (looked up by key, not by scanning both tables)
_ALL = "api_threads a FULL JOIN threads t ON t.thread_id = a.thread_id"
_BY_ID = ("unnest(%(ids)s::text[]) AS k(thread_id) LEFT JOIN api_threads a ON a.thread_id = k.thread_id "
          "LEFT JOIN threads t ON t.thread_id = k.thread_id")


def thread_rows(pool: Any, *, thread_id: str | None = None, status: str | None = None, metadata: dict[str, Any] | None = None,
                ids: list[str] | None = None, limit: int = 10, offset: int = 0, sort: str = "created_at",
                order: str = "desc") -> list[dict[str, Any]]:
    where, args = ["thread_id IS NOT NULL"], {}
    if thread_id is not None:
        ids = [thread_id] if ids is None else [i for i in ids if i == thread_id]
    if status is not None:
        where.append("status = %(status)s")
        args["status"] = status
    if metadata:
        where.append("metadata @> %(meta)s")
        args["meta"] = Jsonb(metadata)
    if ids is not None:
        args["ids"] = ids
        where.append("(x.api OR x.graph IS NOT NULL)")
    threads_sql = _THREADS.replace("{source}", _BY_ID if ids is not None else _ALL)
    sql = (f"SELECT * FROM ({threads_sql}) x WHERE {' AND '.join(where)} "
           f"ORDER BY {sort} {order}, thread_id LIMIT %(limit)s OFFSET %(offset)s")
    with pool.connection() as conn:
        return conn.execute(sql, {**args, "limit": limit, "offset": offset}).fetchall()


def thread_row(pool: Any, thread_id: str) -> dict[str, Any]:
    valid_thread_id(thread_id)
    rows = thread_rows(pool, thread_id=thread_id, limit=1)
    if not rows:
        raise HttpError(404, f"no thread {thread_id!r}")
    return rows[0]


def runner_of(pool: Any, thread_id: str) -> Any:
    from runtime.thread_runner import ThreadRunner

    return ThreadRunner.for_thread(pool, thread_id)


def as_thread(pool: Any, row: dict[str, Any], *, with_values: bool = True) -> dict[str, Any]:
    from web.langgraph_api.assistants import assistant_id

    metadata = dict(row["metadata"])
    if row["graph"] and "assistant_id" not in metadata:
        metadata["assistant_id"] = assistant_id(row["graph"])
    thread = {"thread_id": row["thread_id"], "created_at": row["created_at"], "updated_at": row["updated_at"],
              "metadata": metadata, "status": row["status"], "values": {}, "interrupts": {}, "config": {}}
    if with_values and row["graph"]:
        try:
            snapshot = runner_of(pool, row["thread_id"]).graph.get_state({"configurable": {"thread_id": row["thread_id"]}})
        except Exception:  # noqa: BLE001 - a graph not loadable here: the thread is listed without its values
            return thread
        thread["values"] = snapshot.values
        thread["interrupts"] = {t.id: [interrupt_json(i) for i in t.interrupts] for t in snapshot.tasks if t.interrupts}
    return thread


def interrupt_json(interrupt: Any) -> dict[str, Any]:
    from runtime.interrupts import jsonable

    return {"value": jsonable(interrupt.value), "id": interrupt.id}


def checkpoint_json(config: Any) -> dict[str, Any] | None:
    if not config:
        return None
    c = config.get("configurable", {})
    return {"thread_id": c.get("thread_id"), "checkpoint_ns": c.get("checkpoint_ns", ""), "checkpoint_id": c.get("checkpoint_id"),
            "checkpoint_map": c.get("checkpoint_map")}


def state_json(snapshot: Any) -> dict[str, Any]:
    """A StateSnapshot as LangGraph's API returns it (ThreadState)."""
    tasks = []
    for t in snapshot.tasks:
        state = t.state
        tasks.append({"id": t.id, "name": t.name, "path": list(t.path) if getattr(t, "path", None) else [],
                      "error": str(t.error) if t.error else None, "interrupts": [interrupt_json(i) for i in t.interrupts],
                      "checkpoint": checkpoint_json(state) if isinstance(state, dict) else None,
                      "state": state_json(state) if state is not None and not isinstance(state, dict) else None,
                      "result": t.result})
    return {"values": snapshot.values, "next": list(snapshot.next), "tasks": tasks,
            "checkpoint": checkpoint_json(snapshot.config), "metadata": snapshot.metadata, "created_at": snapshot.created_at,
            "parent_checkpoint": checkpoint_json(snapshot.parent_config),
            "interrupts": [interrupt_json(i) for i in getattr(snapshot, "interrupts", ()) or ()]}


EMPTY_STATE = {"values": {}, "next": [], "tasks": [], "checkpoint": None, "metadata": {}, "created_at": None,
               "parent_checkpoint": None, "interrupts": []}


def state_of(pool: Any, thread_id: str, checkpoint_id: str | None = None, subgraphs: bool = False) -> dict[str, Any]:
    row = thread_row(pool, thread_id)
    if not row["graph"]:
        return EMPTY_STATE
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if checkpoint_id:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    snapshot = runner_of(pool, thread_id).graph.get_state(config, subgraphs=subgraphs)
    if checkpoint_id and not snapshot.config:
        raise HttpError(404, f"thread {thread_id} has no checkpoint {checkpoint_id!r}")
    return state_json(snapshot)


def history_of(pool: Any, thread_id: str, limit: int, before: str | None, metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    row = thread_row(pool, thread_id)
    if not row["graph"]:
        return []
    graph = runner_of(pool, thread_id).graph
    before_config = {"configurable": {"thread_id": thread_id, "checkpoint_id": before}} if before else None
    return [state_json(s) for s in graph.get_state_history({"configurable": {"thread_id": thread_id}}, limit=limit,
                                                           before=before_config, filter=metadata or None)]


# --- routes ---------------------------------------------------------------------------------------


async def create(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    thread_id = field(body, "thread_id", str) or str(uuid.uuid4())
    valid_thread_id(thread_id)
    metadata = field(body, "metadata", dict) or {}
    if_exists = field(body, "if_exists", str, "raise")
    if if_exists not in ("raise", "do_nothing"):
        raise HttpError(422, "if_exists must be raise or do_nothing")
    pool = request.state.pool

    def make() -> dict[str, Any]:
        with pool.connection() as conn:  # one statement: made unless the id is taken, by either kind of thread
            made = conn.execute("INSERT INTO api_threads (thread_id, metadata) SELECT %(t)s, %(m)s "
                                "WHERE NOT EXISTS (SELECT 1 FROM threads WHERE thread_id = %(t)s) ON CONFLICT DO NOTHING "
                                "RETURNING thread_id, metadata, created_at, updated_at, NULL AS graph, 'idle' AS status",
                                {"t": thread_id, "m": Jsonb({**metadata, "owner": reviewer.name} if "owner" not in metadata else metadata)}
                                ).fetchone()
        if made is not None:  # new, with no run yet: idle, no values
            return as_thread(pool, made)
        if if_exists == "raise":
            raise HttpError(409, f"thread {thread_id} already exists")
        return as_thread(pool, thread_row(pool, thread_id))

    return Json(await run_in_threadpool(make))


async def get(request: Request, reviewer: Reviewer) -> Response:
    pool = request.state.pool
    tid = request.path_params["thread_id"]
    return Json(await run_in_threadpool(lambda: as_thread(pool, thread_row(pool, tid))))


async def update(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    metadata = field(body, "metadata", dict) or {}
    pool = request.state.pool
    tid = request.path_params["thread_id"]

    def change() -> dict[str, Any]:
        thread_row(pool, tid)
        with pool.connection() as conn:
            conn.execute("INSERT INTO api_threads (thread_id, metadata) VALUES (%s, %s) ON CONFLICT (thread_id) DO UPDATE "
                         "SET metadata = api_threads.metadata || EXCLUDED.metadata, updated_at = now()", (tid, Jsonb(metadata)))
        return as_thread(pool, thread_row(pool, tid))

    return Json(await run_in_threadpool(change))


async def delete(request: Request, reviewer: Reviewer) -> Response:
    pool = request.state.pool
    tid = request.path_params["thread_id"]

    def remove() -> None:
        row = thread_row(pool, tid)
        if row["graph"]:
            raise HttpError(409, f"thread {tid} has run: its decisions and audit are kept (prune its checkpoints with `signoff db prune`)")
        with pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM api_runs WHERE thread_id = %s", (tid,))
            conn.execute("DELETE FROM api_threads WHERE thread_id = %s", (tid,))

    await run_in_threadpool(remove)
    return Response(status_code=204)


async def search(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    limit, offset = paging(body)
    status = field(body, "status", str)
    if status is not None and status not in STATUSES:
        raise HttpError(422, f"status must be one of {', '.join(STATUSES)}")
    sort = field(body, "sort_by", str, "created_at")
    order = field(body, "sort_order", str, "desc")
    if sort not in ("thread_id", "status", "created_at", "updated_at") or order not in ("asc", "desc"):
        raise HttpError(422, "sort_by must be thread_id, status, created_at or updated_at; sort_order asc or desc")
    metadata, ids = field(body, "metadata", dict), field(body, "ids", list)
    pool = request.state.pool

    def find() -> list[dict[str, Any]]:
        rows = thread_rows(pool, status=status, metadata=metadata, ids=ids, limit=limit, offset=offset, sort=sort, order=order)
        return [as_thread(pool, r) for r in rows]

    return Json(await run_in_threadpool(find))


async def count(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    status, metadata = field(body, "status", str), field(body, "metadata", dict)
    pool = request.state.pool
    return Json(len(await run_in_threadpool(lambda: thread_rows(pool, status=status, metadata=metadata, limit=100000))))


async def state(request: Request, reviewer: Reviewer) -> Response:
    pool = request.state.pool
    tid, checkpoint_id = request.path_params["thread_id"], request.path_params.get("checkpoint_id")
    subgraphs = request.query_params.get("subgraphs", "false").lower() == "true"
    return Json(await run_in_threadpool(state_of, pool, tid, checkpoint_id, subgraphs))


async def state_at(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    checkpoint = field(body, "checkpoint", dict) or {}
    pool = request.state.pool
    return Json(await run_in_threadpool(state_of, pool, request.path_params["thread_id"], checkpoint.get("checkpoint_id"),
                                        bool(body.get("subgraphs"))))


async def history(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    limit = field(body, "limit", int, 10)
    if not 0 < limit <= 1000:
        raise HttpError(422, "limit must be 1-1000")
    before = (field(body, "before", dict) or {}).get("checkpoint_id")
    pool = request.state.pool
    return Json(await run_in_threadpool(history_of, pool, request.path_params["thread_id"], limit, before, field(body, "metadata", dict)))


async def not_served(request: Request, reviewer: Reviewer) -> Response:
    raise HttpError(405, "changing a thread's state directly would bypass its sign-off: resume it with a run (command.resume) instead")


def routes() -> list[Route]:
    return [
        Route("/threads", route(create), methods=["POST"]),
        Route("/threads/search", route(search), methods=["POST"]),
        Route("/threads/count", route(count), methods=["POST"]),
        Route("/threads/{thread_id}", route(get), methods=["GET"]),
        Route("/threads/{thread_id}", route(update), methods=["PATCH"]),
        Route("/threads/{thread_id}", route(delete), methods=["DELETE"]),
        Route("/threads/{thread_id}/state", route(state), methods=["GET"]),
        Route("/threads/{thread_id}/state", route(not_served), methods=["POST"]),
        Route("/threads/{thread_id}/state/checkpoint", route(state_at), methods=["POST"]),
        Route("/threads/{thread_id}/state/{checkpoint_id}", route(state), methods=["GET"]),
        Route("/threads/{thread_id}/history", route(history), methods=["POST"]),
        Route("/threads/{thread_id}/history", route(history), methods=["GET"]),
    ]
