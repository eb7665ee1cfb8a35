"""/healthz and /readyz: is the process up, and can it do its work.

Ready means PostgreSQL answers within a few seconds and every migration this version ships
(and LangGraph's own) is applied; a load balancer or an orchestrator stops sending work to a
process that is not, and a deploy waits for it.
"""

from __future__ import annotations

from typing import Any

#: Seconds a readiness check waits for a connection.
CHECK_TIMEOUT = 3.0


def readiness(pool: Any) -> tuple[bool, dict[str, Any]]:
    """(ready, what was found) for a JSON answer."""
    from checkpoint.migrations import _pending

    try:
        with pool.connection(timeout=CHECK_TIMEOUT) as conn:
            conn.execute("SELECT 1")
            pending = _pending(conn, checkpoints=True)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        return False, {"status": "unavailable", "database": "unreachable", "error": reason}
    if pending:
        return False, {"status": "unavailable", "database": "reachable", "migrations": "pending: run `signoff db migrate`"}
    return True, {"status": "ready", "database": "reachable", "migrations": "current"}


def small_pool(url: str) -> Any:
    """Two connections at most, opened on demand: what a metrics endpoint needs, and it comes
    up (answering /readyz with 503) even while the database is down."""
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from checkpoint.database import _quiet_psycopg_logs

    _quiet_psycopg_logs()
    pool = ConnectionPool(url, min_size=0, max_size=2, open=False, name="signoff-metrics", timeout=CHECK_TIMEOUT,
                          kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3,
                                  "application_name": "signoff metrics"})
    pool.open(wait=False)
    return pool
