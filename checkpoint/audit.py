"""The audit trail: what happened to a thread and who did it (decisions, expiries, retries,
fallbacks, side effects, runs interrupted, failed or dead-lettered).

Part of the thread lifecycle kept in checkpoint/ (threads, decisions, audit, jobs, progress
events); nodes write to it through the same two functions when a side effect must be audited
in its own transaction.
"""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool


def record_event(pool: ConnectionPool, thread_id: str, actor: str, kind: str, detail: dict[str, Any] | None = None) -> None:
    """Append to the audit trail (never secrets or message bodies)."""
    with pool.connection() as conn:
        record_event_on(conn, thread_id, actor, kind, detail)


def record_event_on(conn: Connection[Any], thread_id: str, actor: str, kind: str, detail: dict[str, Any] | None = None) -> None:
    """`record_event` on a given connection, so it can share the transaction of the write it audits."""
    conn.execute(
        "INSERT INTO audit_events (thread_id, actor, kind, detail) VALUES (%s, %s, %s, %s)",
        (thread_id, actor, kind, Jsonb(detail or {})),
    )


def events_of(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """The thread's audit trail, oldest first (at, actor, kind, detail)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT at, actor, kind, detail FROM audit_events WHERE thread_id = %s ORDER BY at, id", (thread_id,)
        ).fetchall()
