"""Cancelling a run wherever it runs: the process that cancels NOTIFYs the thread's id; the
process running it (a worker, anywhere) stops the run at its next step boundary, the way a
drain stops it (LangGraph's RunControl), and closes its job rather than queueing it again.
The thread keeps every finished step and waits, `interrupted`, for its next run."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg

CHANNEL = "signoff_cancel"
REASON = "cancelled"

_controls: dict[str, list[Any]] = {}
_mutex = threading.Lock()
_listening: set[str] = set()


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
    with _mutex:
        if conninfo in _listening:
            return
        _listening.add(conninfo)
    threading.Thread(target=_loop, args=(conninfo,), name="signoff-cancel-listen", daemon=True).start()


def _loop(conninfo: str) -> None:
    import time

    while True:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                while True:
                    for notify in conn.notifies(timeout=1.0):
                        with _mutex:
                            controls = list(_controls.get(notify.payload, ()))
                        for control in controls:
                            control.request_drain(REASON)
        except psycopg.Error:
            time.sleep(1.0)  # the database blinked: listen again (the canceller repeats its request)
