"""Threads that cannot run here because their graph is unknown or fails to load: never left
`running` under a job stuck `doing`, never requeued in a loop. A worker that cannot load a
thread's graph records why on the thread (pending, show and workers say so) and closes the
job; a process that can load it again (the fix deployed) takes the thread up.
"""

from __future__ import annotations

from typing import Any


def mark(pool: Any, thread_id: str, reason: str, *, fresh: bool) -> None:
    """Record why the thread cannot run; a thread no process has run yet goes back to queued."""
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET graph_error = %s, status = CASE WHEN %s THEN 'queued' ELSE status END, "
                     "updated_at = now() WHERE thread_id = %s", (reason[:500], fresh, thread_id))


def clear(pool: Any, thread_id: str) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET graph_error = NULL WHERE thread_id = %s AND graph_error IS NOT NULL", (thread_id,))


def blocked(pool: Any, limit: int = 20) -> list[dict[str, Any]]:
    """Threads set aside because their graph cannot load (thread_id, graph, status, graph_error)."""
    with pool.connection() as conn:
        return conn.execute("SELECT thread_id, graph, status, graph_error FROM threads WHERE graph_error IS NOT NULL "
                            "ORDER BY updated_at LIMIT %s", (limit,)).fetchall()


_said: set[str] = set()


def retry_loadable(pool: Any, log: Any = None) -> list[str]:
    """Queue again the threads set aside for a graph this process can load now; their ids.
    Never raises for a configuration that cannot be read (the sweep goes on; `log` says why)."""
    from checkpoint import jobs
    from checkpoint.errors import SignoffError
    from runtime.registry import find

    with pool.connection() as conn:
        graphs = [r["graph"] for r in conn.execute("SELECT DISTINCT graph FROM threads WHERE graph_error IS NOT NULL")]
    taken: list[str] = []
    for graph in graphs:
        try:
            entry = find(graph)
        except SignoffError as exc:  # the langgraph.json named by SIGNOFF_CONFIG is gone
            if log is not None and str(exc) not in _said:
                _said.add(str(exc))  # once per process, not once a sweep
                log(f"cannot look for graph {graph}: {exc}")
            return taken
        if entry is None or entry.error is not None:
            continue
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute("UPDATE threads SET graph_error = NULL WHERE graph = %s AND graph_error IS NOT NULL "
                                "RETURNING thread_id", (graph,)).fetchall()
            for row in rows:
                jobs.enqueue_on(conn, row["thread_id"], "recover")
                taken.append(row["thread_id"])
    return taken


def print_blocked(pool: Any, say: Any) -> None:
    """One line per thread set aside, for pending, show and workers."""
    for row in blocked(pool):
        say(f"cannot run {row['thread_id']} ({row['status']}, graph {row['graph']}): {row['graph_error']}")
