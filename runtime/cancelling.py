"""Cancelling a run wherever it runs: the process that cancels NOTIFYs the thread's id; the
process running it (a worker, anywhere) stops the run at its next step boundary, the way a
drain stops it (LangGraph's RunControl), and closes its job rather than queueing it again.
The thread keeps every finished step and waits, `interrupted`, for its next run."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

CHANNEL = "signoff_cancel"
REASON = "cancelled"

_controls: dict[str, list[Any]] = {}
_mutex = threading.Lock()


def request_cancel(pool: Any, thread_id: str) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, thread_id))


def cancelled(control: Any) -> bool:
    return control is not None and getattr(control, "drain_reason", None) == REASON


@contextmanager
def cancellable(pool: Any, thread_id: str, control: Any) -> Iterator[None]:
    """While the block runs the thread, a cancel for it drains `control`."""
    if control is None:
        yield
        return
    _listen(pool.conninfo)
    with _mutex:
        _controls.setdefault(thread_id, []).append(control)
    try:
        yield
    finally:
        with _mutex:
            held = _controls.get(thread_id, [])
            if control in held:
                held.remove(control)
            if not held:
                _controls.pop(thread_id, None)


def _listen(conninfo: str) -> None:
    from checkpoint.events import listen_in_background

    listen_in_background(conninfo, CHANNEL, _drain_controls, name="signoff-cancel-listen")


def _drain_controls(thread_id: str) -> None:
    """Stop every run of the thread in this process (the canceller repeats its request, so
    one lost while the database blinked is not lost for good)."""
    with _mutex:
        controls = list(_controls.get(thread_id, ()))
    for control in controls:
        control.request_drain(REASON)
