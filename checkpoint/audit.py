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
        (storable(thread_id), storable(actor), kind, Jsonb(storable(detail or {}))),
    )


def storable(value: Any) -> Any:
    """`value` with every string as PostgreSQL can store it: a NUL (which no text or jsonb
    value may hold) and a lone surrogate (not UTF-8) written as escapes, so what a request
    carried in its path or body is recorded as typed instead of failing the audit write."""
    if isinstance(value, str):
        if "\x00" not in value and value.isascii():
            return value
        return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


def events_of(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """The thread's audit trail, oldest first (at, actor, kind, detail)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT at, actor, kind, detail FROM audit_events WHERE thread_id = %s ORDER BY at, id", (thread_id,)
        ).fetchall()


def record_anonymous_refusal(pool: ConnectionPool, *, source: str, window: str, status: int, method: str, path: str,
                             reason: str, times: int = 1) -> int:
    """Count `times` refused requests from `source` (an address) made before anyone signed in,
    in the one audit row of that source and `window`; the count so far in the window.

    One row per source and window, not one per request: whoever floods the server with bad
    tokens or links cannot grow the audit trail faster than a row a window (migration 011's
    unique index makes concurrent requests add to the same row)."""
    detail = {"source": source, "window": window, "count": times, "statuses": {str(status): times},
              "last_method": method, "last_path": path[:200], "last_reason": reason[:200]}
    with pool.connection() as conn:
        row = conn.execute(
            """INSERT INTO audit_events (thread_id, actor, kind, detail) VALUES ('-', 'anonymous', 'http_refused', %(detail)s)
               ON CONFLICT ((detail->>'source'), (detail->>'window')) WHERE actor = 'anonymous' AND kind = 'http_refused'
               DO UPDATE SET detail = audit_events.detail || jsonb_build_object(
                   'count', (audit_events.detail->>'count')::int + %(times)s,
                   'statuses', audit_events.detail->'statuses' || jsonb_build_object(
                       %(status)s::text, coalesce((audit_events.detail->'statuses'->>%(status)s::text)::int, 0) + %(times)s),
                   'last_method', %(method)s::text, 'last_path', %(path)s::text, 'last_reason', %(reason)s::text)
               RETURNING (detail->>'count')::int AS count""",
            {"detail": Jsonb(storable(detail)), "times": times, "status": str(status), "method": storable(method),
             "path": storable(path[:200]), "reason": storable(reason[:200])},
        ).fetchone()
    return int(row["count"])
