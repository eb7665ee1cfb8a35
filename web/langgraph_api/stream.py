"""Server-sent events of a run, read from what the run writes to PostgreSQL wherever it runs
(a worker on another machine, or one that took over from a killed worker): each step's
checkpoint gives `values` (the state after the step) and `updates` (what each node wrote),
`messages` (messages-tuple) are the messages nodes wrote; the interrupt the run stopped at
comes last as `updates` {"__interrupt__": [...]}. A client that goes away only stops its
reading: the run is the worker's and goes on."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool

from web.langgraph_api.http import dumps

POLL_SECONDS = 0.05
#: the modes served; others (debug, events, tasks, checkpoints, custom) are accepted and send nothing
MODES = ("values", "updates", "messages", "messages-tuple")


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"event: {event}\ndata: ".encode()
    return head + dumps(data) + (f"\nid: {event_id}" if event_id is not None else "").encode() + b"\n\n"


def new_steps(pool: Any, thread_id: str, after: str | None) -> list[tuple[Any, Any]]:
    """(parent, snapshot) for each checkpoint of the thread after `after`, oldest first."""
    from web.langgraph_api.threads import runner_of

    graph = runner_of(pool, thread_id).graph
    found: list[Any] = []
    for snapshot in graph.get_state_history({"configurable": {"thread_id": thread_id}}, limit=200):
        found.append(snapshot)
        if after is not None and snapshot.config["configurable"]["checkpoint_id"] <= after:
            break
    found.reverse()
    steps, parent = [], None
    for snapshot in found:
        if after is None or snapshot.config["configurable"]["checkpoint_id"] > after:
            steps.append((parent, snapshot))
        parent = snapshot
    return steps


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


async def run_events(pool: Any, thread_id: str, run_id: str, modes: list[str], *, skip: int = 0) -> AsyncIterator[bytes]:
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
    rows = await run_in_threadpool(run_rows, pool, thread_id, run_id=run_id, limit=1)
    after = rows[0]["from_checkpoint"] if rows else None
    while True:
        rows = await run_in_threadpool(run_rows, pool, thread_id, run_id=run_id, limit=1)
        status = live_status(rows[0]) if rows else "error"
        try:
            steps = await run_in_threadpool(new_steps, pool, thread_id, after)
        except Exception:  # noqa: BLE001 - no checkpoint yet, or the graph not loadable here: try again
            steps = []
        for parent, snapshot in steps:
            for event, data in step_events(parent, snapshot, modes):
                chunk = emit(event, data)
                if chunk:
                    yield chunk
            after = snapshot.config["configurable"]["checkpoint_id"]
        if status in FINAL:
            if not steps:  # nothing was written since the status was read: the stream is complete
                if status == "error":
                    chunk = emit("error", {"error": "RunError", "message": rows[0].get("error") or rows[0].get("job_result") or "the run failed"})
                else:
                    chunk = None
                    for event, data in await run_in_threadpool(final_events, pool, thread_id, modes):
                        chunk = emit(event, data)
                        if chunk:
                            yield chunk
                    chunk = None
                if chunk:
                    yield chunk
                return
            continue
        await asyncio.sleep(POLL_SECONDS)
