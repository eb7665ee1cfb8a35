"""Server-sent events of a run, read from what the run writes to PostgreSQL wherever it runs
(a worker on another machine, or one that took over from a killed worker): each step's
checkpoint gives `values` (the state after the step) and `updates` (what each node wrote),
`messages` (messages-tuple) are the messages nodes wrote, `custom` what nodes wrote with
get_stream_writer() (kept with the thread's progress events); with `stream_subgraphs`, the
subgraphs' steps come as `updates|NAMESPACE`; the interrupt the run stopped at comes last. A client that goes away only stops its
reading: the run is the worker's and goes on."""

from __future__ import annotations

from typing import Any, AsyncIterator


from web.langgraph_api.http import run_in_threadpool, dumps

#: seconds between looks when no notification wakes the stream
POLL_SECONDS = 1.0
#: the modes served; others (debug, events, tasks, checkpoints) are accepted and send nothing
MODES = ("values", "updates", "messages", "messages-tuple", "custom")


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"event: {event}\ndata: ".encode()
    return head + dumps(data) + (f"\nid: {event_id}" if event_id is not None else "").encode() + b"\n\n"


def new_steps(pool: Any, thread_id: str, after: dict[str, str | None], subgraphs: bool) -> list[tuple[str, Any, Any]]:
    """(namespace, parent, snapshot) for each checkpoint of the thread (and of its subgraphs,
    with `subgraphs`) after the last one seen in its namespace, in the order they were made."""
    from web.langgraph_api.threads import runner_of

    graph = runner_of(pool, thread_id).graph
    namespaces = [""]
    if subgraphs:
        with pool.connection() as conn:
            rows = conn.execute("SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = %s AND checkpoint_ns <> '' "
                                "AND checkpoint_id > %s", (thread_id, after.get("") or "")).fetchall()
        namespaces += sorted(r["checkpoint_ns"] for r in rows)
    steps: list[tuple[str, Any, Any]] = []
    for ns in namespaces:
        since = after.get(ns, after.get(""))
        found: list[Any] = []
        for snapshot in graph.get_state_history({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}, limit=200):
            found.append(snapshot)
            if since is not None and snapshot.config["configurable"]["checkpoint_id"] <= since:
                break
        found.reverse()
        parent = None
        for snapshot in found:
            if since is None or snapshot.config["configurable"]["checkpoint_id"] > since:
                steps.append((ns, parent, snapshot))
            parent = snapshot
    steps.sort(key=lambda step: step[2].config["configurable"]["checkpoint_id"])
    return steps


def custom_events(pool: Any, thread_id: str, after: int) -> list[tuple[int, Any]]:
    """What the graph's nodes wrote with get_stream_writer() since progress event `after`."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT id, event FROM progress_events WHERE thread_id = %s AND id > %s AND event->>'event' = 'custom' "
                            "ORDER BY id", (thread_id, after)).fetchall()
    return [(r["id"], r["event"].get("data")) for r in rows]


def step_events(parent: Any, snapshot: Any, modes: list[str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if (snapshot.metadata or {}).get("source") == "input":
        return out
    updates = [(t.name, t.result) for t in (parent.tasks if parent is not None else ()) if t.result is not None and t.name != "__start__"]
    if "updates" in modes:
        out.extend(("updates", {name: result}) for name, result in updates)
    if "messages" in modes or "messages-tuple" in modes:
        for name, result in updates:
            messages = result.get("messages") if isinstance(result, dict) else None
            for message in messages if isinstance(messages, list) else [messages] if messages is not None else []:
                out.append(("messages", [message, {"langgraph_node": name, "langgraph_step": (snapshot.metadata or {}).get("step")}]))
    if "values" in modes:
        out.append(("values", snapshot.values))
    return out


def final_events(pool: Any, thread_id: str, modes: list[str]) -> list[tuple[str, Any]]:
    from web.langgraph_api.threads import interrupt_json, runner_of

    snapshot = runner_of(pool, thread_id).graph.get_state({"configurable": {"thread_id": thread_id}})
    interrupts = [interrupt_json(i) for t in snapshot.tasks for i in t.interrupts]
    if interrupts and ("updates" in modes or "values" in modes):
        return [("updates" if "updates" in modes else "values", {"__interrupt__": interrupts})]
    return []


async def run_events(pool: Any, thread_id: str, run_id: str, modes: list[str], *, skip: int = 0,
                     subgraphs: bool = False) -> AsyncIterator[bytes]:
    """The run's events until it ends; `skip`: how many the client already has (Last-Event-ID)."""
    from web.langgraph_api.runs import FINAL, live_status, run_rows

    counter = 0

    def emit(event: str, data: Any) -> bytes | None:
        nonlocal counter
        counter += 1
        return sse(event, data, counter) if counter > skip else None

    first = emit("metadata", {"run_id": run_id, "attempt": 1})
    if first:
        yield first
    from web.langgraph_api.tracker import WAITERS

    async with WAITERS.watching(thread_id) as changed:
        async for chunk in _events(pool, thread_id, run_id, modes, subgraphs, emit, changed):
            yield chunk


async def _events(pool: Any, thread_id: str, run_id: str, modes: list[str], subgraphs: bool, emit: Any,
                  changed: Any) -> AsyncIterator[bytes]:
    from web.langgraph_api.runs import FINAL, live_status, run_rows

    rows = await run_in_threadpool(run_rows, pool, thread_id, run_id=run_id, limit=1)
    after: dict[str, str | None] = {"": rows[0]["from_checkpoint"] if rows else None}
    event_after = rows[0]["from_event"] if rows else 0
    while True:
        rows = await run_in_threadpool(run_rows, pool, thread_id, run_id=run_id, limit=1)
        status = live_status(rows[0]) if rows else "error"
        chunks: list[tuple[str, Any]] = []
        if "custom" in modes:
            for event_id, data in await run_in_threadpool(custom_events, pool, thread_id, event_after):
                chunks.append(("custom", data))
                event_after = event_id
        try:
            steps = await run_in_threadpool(new_steps, pool, thread_id, after, subgraphs)
        except Exception:  # noqa: BLE001 - no checkpoint yet, or the graph not loadable here: try again
            steps = []
        for ns, parent, snapshot in steps:
            chunks.extend((f"{event}|{ns}" if ns else event, data) for event, data in step_events(parent, snapshot, modes))
            after[ns] = snapshot.config["configurable"]["checkpoint_id"]
        for event, data in chunks:
            chunk = emit(event, data)
            if chunk:
                yield chunk
        if status in FINAL:
            if not chunks:  # nothing was written since the status was read: the stream is complete
                if status == "error":
                    message = rows[0].get("error") or rows[0].get("job_result") or "the run failed" if rows else "the run failed"
                    chunk = emit("error", {"error": "RunError", "message": message})
                    if chunk:
                        yield chunk
                else:
                    for event, data in await run_in_threadpool(final_events, pool, thread_id, modes):
                        chunk = emit(event, data)
                        if chunk:
                            yield chunk
                return
            continue
        await changed(POLL_SECONDS)
