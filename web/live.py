"""A running thread's progress, live in its page: server-sent events from the progress events
`signoff watch` follows (checkpoint/events.py), read from where the page left off.

Each event goes to the browser as one line of text the server words (web/static/live.js adds
it as text, never as markup). The stream ends at the run's stop (the page then reloads once
to show what the run left), or after a while; the browser's EventSource reconnects with
Last-Event-ID, so nothing is missed or shown twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

#: How often the table is read for new events, and how long one stream lasts at most.
POLL_SECONDS = 0.4
STREAM_SECONDS = 300.0
#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


def progress_line(event: dict[str, Any]) -> dict[str, Any] | None:
    """The words and status for one progress event; None for one not shown (a token)."""
    from console.progress import describe_calls

    kind = event.get("event")
    if kind == "node_start":
        return {"line": f"{event.get('node')} started", "status": "running"}
    if kind == "node_end":
        calls = describe_calls([c for c in event.get("calls") or [] if isinstance(c, dict)])
        warnings = [str(w) for w in ((event.get("update") or {}).get("warnings") or [])]
        text = f"{event.get('node')} done in {float(event.get('duration') or 0):.2f} s" + (f"  {calls}" if calls else "")
        text += "".join(f"  warning: {w}" for w in warnings) + (f"  error: {event['error']}" if event.get("error") else "")
        return {"line": text, "status": "running", "warn": bool(warnings or event.get("error"))}
    if kind in ("retry", "fallback"):
        return {"line": f"{kind} in {event.get('node')}: {event.get('error') or event.get('model') or ''}".rstrip(": "), "warn": True}
    if kind == "run_started":
        return {"line": f"a worker picked the thread up ({event.get('kind')})", "status": "running"}
    if kind == "stop":
        where = f" at gate {event.get('gate')}" if event.get("gate") else ""
        return {"line": f"stopped: {event.get('status')}{where}", "status": event.get("status"), "warn": event.get("status") == "failed"}
    return None


def sse(stream_id: int, name: str, data: dict[str, Any]) -> str:
    return f"id: {stream_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n"


async def stream(pool: Any, thread_id: str, after: int, *, seconds: float = STREAM_SECONDS) -> AsyncIterator[str]:
    """Server-sent events for the thread's progress after event id `after`, until its stop.

    Asynchronous, each read a short trip to the thread pool: an open page holds no worker
    thread between reads, so many reviewers watching never starve the server's requests."""
    from checkpoint import threads
    from checkpoint.events import read_since

    idle_checked = False
    ends = time.monotonic() + seconds
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while time.monotonic() < ends:
        for stored in await run_in_threadpool(read_since, pool, thread_id, after):
            after = stored.id
            shown = progress_line(stored.event)
            if shown is None:
                continue
            quiet_since = time.monotonic()
            if stored.event.get("event") == "stop":
                yield sse(after, "stop", shown)
                return
            yield sse(after, "progress", shown)
        if not idle_checked and time.monotonic() - quiet_since > POLL_SECONDS * 2:
            # Nothing new: a run that stopped before this stream began (its stop already read when
            # the page was drawn, or between drawing the page and opening the stream) sends no stop
            # again, so say where the thread stands: anything but queued or running has stopped.
            idle_checked = True
            row = await run_in_threadpool(threads.get, pool, thread_id)
            if row is None or row.status not in ("queued", "running"):
                yield sse(after, "stop", {"line": f"the thread is {row.status if row else 'gone'}", "status": row.status if row else None})
                return
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": still running\n\n"
        await asyncio.sleep(POLL_SECONDS)


def start_after(request: Request) -> int:
    """Where to pick up: the browser's Last-Event-ID on a reconnect, else the page's `after`."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


def progress_stream(request: Request, pool: Any, thread_id: str) -> Response:
    return StreamingResponse(stream(pool, thread_id, start_after(request)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
