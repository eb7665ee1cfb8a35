"""Server-sent events of a run, read from what the run writes to PostgreSQL wherever it runs
(a worker on another machine, or one that took over from a killed worker): each step's
checkpoint gives `values` (the state after the step) and `updates` (what each node wrote);
`messages` (messages-tuple) are the chunks a chat model streamed, as it streams them (kept
with the thread's progress events: runtime/message_chunks.py), and the messages nodes wrote
that were not streamed; `custom` what nodes wrote with get_stream_writer() (kept with the
progress events too); with `stream_subgraphs`, the subgraphs' steps come as `updates|NAMESPACE`;
the interrupt the run stopped at comes last. A client that goes away only stops its reading:
the run is the worker's and goes on.

A reader that reconnects (Last-Event-ID) is sent the same events in the same order, then the
new ones (`custom` events aside: they carry no step, and come where they are read): each
step's chunks come before the step's own events, and a step waits for its
chunks (the worker writes progress a moment after the checkpoint) until its tasks' ends or
the next step's starts are read, or the run ended, or SETTLE_SECONDS passed (a worker that
died took its unwritten progress along)."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from runtime.message_chunks import Messages, as_message, is_chunk
from web.langgraph_api.http import run_in_threadpool, dumps

#: seconds between looks when no notification wakes the stream
POLL_SECONDS = 1.0
#: seconds a step's events wait for the chunks its model calls streamed, at most
SETTLE_SECONDS = 3.0
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


def progress_since(pool: Any, thread_id: str, after: int, kinds: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """The run's progress events of these kinds since event `after` (custom data, message
    chunks, tasks' starts and ends), in the order written; tokens that are no chunk of a
    message (Signoff's own graphs) are left out."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT id, event FROM progress_events WHERE thread_id = %s AND id > %s AND event->>'event' = ANY(%s) "
                            "AND (event->>'event' <> 'token' OR event ? 'm') ORDER BY id", (thread_id, after, kinds)).fetchall()
    return [(r["id"], r["event"]) for r in rows]


def step_events(parent: Any, snapshot: Any, modes: list[str], streamed: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, Any]]:
    """The step's events; a message already sent as chunks (`streamed`) is not sent again whole."""
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
                if _message_id(message) in streamed:
                    continue
                out.append(("messages", [message, {"langgraph_node": name, "langgraph_step": (snapshot.metadata or {}).get("step")}]))
    if "values" in modes:
        out.append(("values", snapshot.values))
    return out


def _message_id(message: Any) -> Any:
    return message.get("id") if isinstance(message, dict) else getattr(message, "id", None)


class Chunks:
    """A stream's message chunks: read, then sent in their step's turn."""

    def __init__(self) -> None:
        self.messages = Messages()
        self.waiting: list[tuple[dict[str, Any], str, Any, dict[str, Any]]] = []
        self.streamed: set[str] = set()
        self.ended: set[str] = set()
        self.begun: set[str] = set()
        self.seen_at: dict[str, float] = {}

    def read(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "node_end":
            self.ended.add(event.get("id"))
        elif kind == "node_start":
            self.begun.add(event.get("id"))
        elif is_chunk(event):
            known = self.messages.read(event)
            if known is not None:
                self.waiting.append((event, *known))

    def settled(self, parent: Any, snapshot: Any) -> bool:
        """Every chunk of the step is read: its tasks' ends are, or a next task's start (the
        worker writes its progress in order), or SETTLE_SECONDS passed since the step was seen."""
        done = [t.id for t in (parent.tasks if parent is not None else ()) if t.result is not None and t.name != "__start__"]
        if all(task in self.ended for task in done) or any(t.id in self.begun for t in snapshot.tasks):
            return True
        first = self.seen_at.setdefault(snapshot.config["configurable"]["checkpoint_id"], time.monotonic())
        return time.monotonic() - first >= SETTLE_SECONDS

    def send(self, up_to_step: int | None) -> list[tuple[str, Any]]:
        """The chunks of steps up to `up_to_step` (None: all read), as `messages` events."""
        out: list[tuple[str, Any]] = []
        keep = []
        for event, message_id, step, metadata in self.waiting:
            if up_to_step is not None and isinstance(step, int) and step > up_to_step:
                keep.append((event, message_id, step, metadata))
                continue
            self.streamed.add(message_id)
            out.append(("messages", [as_message(event, message_id), metadata]))
        self.waiting = keep
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
    messages = "messages" in modes
    kinds = (["custom"] if "custom" in modes else []) + (["token", "node_start", "node_end"] if messages else [])
    chunks = Chunks()
    while True:
        rows = await run_in_threadpool(run_rows, pool, thread_id, run_id=run_id, limit=1)
        status = live_status(rows[0]) if rows else "error"
        out: list[tuple[str, Any]] = []
        try:
            steps = await run_in_threadpool(new_steps, pool, thread_id, after, subgraphs)
        except Exception:  # noqa: BLE001 - no checkpoint yet, or the graph not loadable here: try again
            steps = []
        if kinds:  # read after the steps: what the steps' tasks wrote meanwhile is read with them
            for event_id, event in await run_in_threadpool(progress_since, pool, thread_id, event_after, kinds):
                event_after = event_id
                if event.get("event") == "custom":
                    out.append(("custom", event.get("data")))
                else:
                    chunks.read(event)
        held: int | None = None
        for ns, parent, snapshot in steps:
            if messages and not ns:
                step = (snapshot.metadata or {}).get("step")
                if status not in FINAL and not chunks.settled(parent, snapshot):
                    held = step if isinstance(step, int) else -1
                    break  # this step and those after it wait for its chunks
                out.extend(chunks.send(step if isinstance(step, int) else -1))
            out.extend((f"{event}|{ns}" if ns else event, data) for event, data in step_events(parent, snapshot, modes, chunks.streamed))
            after[ns] = snapshot.config["configurable"]["checkpoint_id"]
        if messages:
            out.extend(chunks.send(held))
        for event, data in out:
            chunk = emit(event, data)
            if chunk:
                yield chunk
        if status in FINAL:
            if not out:  # nothing was written since the status was read: the stream is complete
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
