"""Handing threads to workers, and following a thread's progress from any shell.

With a live worker, `start`, `approve` and `reject` record the submission or the decision
and queue a job; the worker runs it, and the terminal follows the thread's persisted
progress events (checkpoint/events.py) exactly as `signoff watch` does. With none, the CLI
runs the thread itself, as it always did.
"""

from __future__ import annotations

from typing import Any, Callable

from psycopg_pool import ConnectionPool

from checkpoint import events, jobs, threads
from checkpoint import workers as registry
from checkpoint.threads import _RUN_LOCK_CLASS

from runtime.thread_runner import Stop, stop_from_event

Sink = Callable[[dict[str, Any]], None]

#: Statuses in which a thread may still move without anyone deciding.
_MOVING = ("queued", "running")


def worker_available(pool: ConnectionPool) -> bool:
    """A live worker accepts new work (then commands hand threads over instead of running them)."""
    return registry.any_accepting(pool)


def is_active(pool: ConnectionPool, thread_id: str, *, besides_job: int | None = None) -> bool:
    """The thread is running or about to: a job (other than `besides_job`, one that just
    reported its stop) waits or runs for it, or a process holds its claim (an inline run,
    which persists its events too)."""
    job = jobs.active_job(pool, thread_id)
    if job is not None and job["id"] != besides_job:
        return True
    row = threads.get(pool, thread_id)
    return row is not None and row.status in _MOVING and job is None and jobs.is_claimed(pool, thread_id, _RUN_LOCK_CLASS)


def follow(url: str, pool: ConnectionPool, thread_id: str, sink: Sink, *, after_id: int = 0, poll: float = 1.0,
           through_gates: bool = False, on_stop: Callable[[Stop], None] = lambda stop: None) -> Stop | None:
    """Show the thread's events after `after_id` until it stops with nothing more queued
    for it; the last Stop, or None if its run ended without one (the process died: a
    worker resumes it, or `signoff recover`). A stop that is not the last (replayed, or at a
    gate when `through_gates`) goes to `on_stop` and the following goes on; `through_gates`
    follows until the thread finishes or fails."""
    last: Stop | None = None

    def done(stop: Stop | None) -> bool:
        return not (through_gates and stop is not None and stop.status == "waiting")

    for stored in events.follow(url, pool, thread_id, after_id, poll=poll):
        if stored is None:  # a quiet poll: is anything still coming?
            if done(last) and not is_active(pool, thread_id):
                return last
            continue
        event = stored.event
        if event.get("event") == "stop":
            last = stop_from_event(thread_id, event)
            if events.last_id(pool, thread_id) > stored.id:  # replaying: a later run followed this stop
                on_stop(last)
            elif not done(last):
                on_stop(last)
            elif not is_active(pool, thread_id, besides_job=event.get("job")):
                return last
        elif event.get("event") != "run_started":
            sink(event)
    return last  # pragma: no cover - the stream is endless


def last_event_id(pool: ConnectionPool, thread_id: str) -> int:
    """Where a command that hands work over starts following (before it queues the job)."""
    return events.last_id(pool, thread_id)
