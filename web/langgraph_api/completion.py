"""A run's `on_completion`, as LangGraph means it: "delete" (the default of a stateless run,
one created without a thread) deletes the thread when the run ends; "keep" keeps it.

What Signoff keeps even then: the audit trail (append-only, never deleted), and a thread that
stopped at an interrupt or a gate, or has a person's decision on record (a person must decide
it, or decided it: the audit says it was kept, and why). A thread the run left finished or
failed is deleted like `DELETE /threads/{id}` deletes one that never ran (threads.py), with
its checkpoints (the tables `signoff db prune` prunes, checkpoint/retention.py), its jobs and
progress, and its runs. The serve process's tracker calls this once per run, when it records
how the run ended (tracker.py)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from checkpoint.audit import record_event_on
from checkpoint.retention import CHECKPOINT_TABLES

#: how long after a run ends its thread stays for on_completion "delete": its client reads the output first
COMPLETE_AFTER_SECONDS = 2.0

#: what a deleted thread leaves nowhere (the audit trail and decisions are never among them)
THREAD_TABLES = (*CHECKPOINT_TABLES, "progress_events", "jobs", "approval_waits", "api_runs", "api_threads", "threads")


class Completions:
    """The runs ended with on_completion "delete" whose threads are still here: each is
    completed once no request of this process still reads its output (runs.wait, a stream)
    and a moment has passed. (A serve process stopped meanwhile leaves such a thread kept.)"""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._ended: list[tuple[float, dict[str, Any]]] = []

    def add(self, row: dict[str, Any]) -> None:
        if (row.get("kwargs") or {}).get("on_completion") == "delete":
            with self._mutex:
                self._ended.append((time.monotonic(), row))

    def run(self, pool: Any, watched: Callable[[str], bool]) -> None:
        with self._mutex:
            due = [(t, r) for t, r in self._ended if time.monotonic() - t >= COMPLETE_AFTER_SECONDS and not watched(r["thread_id"])]
            self._ended = [item for item in self._ended if item not in due]
        for _, row in due:
            complete(pool, row)


def complete(pool: Any, row: dict[str, Any]) -> str | None:
    """Apply the run's on_completion: "deleted", "kept" (audited with why), or None when the
    run keeps its thread anyway (on_completion "keep", or another run of the thread is open)."""
    if (row.get("kwargs") or {}).get("on_completion") != "delete":
        return None
    thread_id, run_id = row["thread_id"], str(row["run_id"])
    closed(pool, row.get("job_id"))
    with pool.connection() as conn, conn.transaction():
        thread = conn.execute("SELECT status, gate FROM threads WHERE thread_id = %s FOR UPDATE", (thread_id,)).fetchone()
        busy = conn.execute("SELECT EXISTS (SELECT 1 FROM jobs WHERE thread_id = %(t)s AND status IN ('todo', 'doing')) "
                            "OR EXISTS (SELECT 1 FROM api_runs WHERE thread_id = %(t)s AND run_id <> %(r)s "
                            "AND status IN ('pending', 'running')) AS busy", {"t": thread_id, "r": run_id}).fetchone()["busy"]
        decided = conn.execute("SELECT EXISTS (SELECT 1 FROM approvals WHERE thread_id = %s) AS d", (thread_id,)).fetchone()["d"]
        why = None
        if busy:
            why = "another run of the thread is open"
        elif thread is not None and thread["status"] == "waiting":
            why = f"it waits at {thread['gate'] or 'its gate'} for a decision"
        elif thread is not None and thread["status"] not in ("finished", "failed"):
            why = f"it is {thread['status']}, not finished"
        elif decided:
            why = "it has a person's decision on record"
        if why is not None:
            record_event_on(conn, thread_id, "signoff", "thread_kept", {"run_id": run_id, "on_completion": "delete", "reason": why})
            return "kept"
        for table in THREAD_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE thread_id = %s", (thread_id,))
        record_event_on(conn, thread_id, "signoff", "thread_deleted", {"run_id": run_id, "on_completion": "delete"})
    return "deleted"


#: how long the tracker waits for a finished run's job to close (its worker wrote the run's
#: stop and closes the job a moment later) before deleting what the job still writes to
CLOSE_WAIT_SECONDS = 10.0


def closed(pool: Any, job_id: int | None) -> None:
    """Return once the job is no longer running (or after CLOSE_WAIT_SECONDS)."""
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while job_id is not None and time.monotonic() < deadline:
        with pool.connection() as conn:
            job = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if job is None or job["status"] != "doing":
            return
        time.sleep(0.05)
