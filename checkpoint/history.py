"""What a thread did, read from the tables its runs and decisions wrote: progress events
(steps, retries, fallbacks, stops), gate decisions and stage approvals, the audit trail,
notifications and side effects (tickets, outbox replies, payment steps, published documents).

Plain reads, one query per table on the thread's own indexes; the thread page
(web/thread_history.py) puts them in order.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

#: Streamed tokens are not steps: the page shows the node that wrote them and its result.
_STEP_EVENTS = "event->>'event' <> 'token'"


def progress_of(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """The thread's progress events but tokens, oldest first (id, at, event)."""
    with pool.connection() as conn:
        return conn.execute(f"SELECT id, at, event FROM progress_events WHERE thread_id = %s AND {_STEP_EVENTS} ORDER BY id",
                            (thread_id,)).fetchall()


def gate_visits(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """Each decided gate visit (approvals), oldest first, with its stage approvals."""
    with pool.connection() as conn:
        visits = conn.execute(
            "SELECT gate, checkpoint_id, decision, actor, note, digest, decided_at, handover FROM approvals "
            "WHERE thread_id = %s ORDER BY decided_at, id", (thread_id,)).fetchall()
        stages = conn.execute(
            "SELECT checkpoint_id, digest, stage, role, actor, note, decided_at FROM stage_approvals "
            "WHERE thread_id = %s ORDER BY decided_at, id", (thread_id,)).fetchall()
    for visit in visits:
        visit["stages"] = [s for s in stages if s["checkpoint_id"] == visit["checkpoint_id"]]
    return visits


def stage_approvals_waiting(pool: ConnectionPool, thread_id: str, checkpoint_id: str, digest: str) -> list[dict[str, Any]]:
    """The stage approvals given so far to the content now at the gate (an edited reply is new
    content: what was approved before it does not count for it)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT digest, stage, role, actor, note, decided_at FROM stage_approvals "
            "WHERE thread_id = %s AND checkpoint_id = %s AND digest = %s ORDER BY decided_at, id",
            (thread_id, checkpoint_id, digest)).fetchall()


def side_effects(pool: ConnectionPool, thread_id: str) -> dict[str, list[dict[str, Any]]]:
    """What the thread did outside itself: its ticket, the reply it sent, the payment steps of
    a refund, the document it published."""
    with pool.connection() as conn:
        return {
            "tickets": conn.execute("SELECT id, intent, status, created_at, updated_at FROM tickets WHERE thread_id = %s",
                                    (thread_id,)).fetchall(),
            "outbox": conn.execute("SELECT recipient, kind, body, created_at FROM outbox WHERE thread_id = %s ORDER BY id",
                                   (thread_id,)).fetchall(),
            "payments": conn.execute(
                "SELECT step, order_id, amount_cents, currency, status, reference, error, created_at FROM payment_operations "
                "WHERE thread_id = %s ORDER BY created_at", (thread_id,)).fetchall(),
            "documents": conn.execute("SELECT title, body, content_sha, path, published_at FROM documents WHERE thread_id = %s",
                                      (thread_id,)).fetchall(),
        }
