"""Decisions at gates: one per gate visit, recorded with its audit event, read back by the
runner (to apply a decision whose process died) and by `show`.

Part of the thread lifecycle kept in checkpoint/; nodes/gates.py keeps what a graph is made
of (the gate node, the decision as state, the content digest).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.errors import Conflict


class AlreadyDecided(Conflict):
    """Someone else decided this gate visit first."""

    def __init__(self, actor: str, at: datetime, verdict: str) -> None:
        super().__init__(f"already decided by {actor} at {at:%Y-%m-%d %H:%M:%S %Z} ({verdict})")
        self.actor, self.at, self.verdict = actor, at, verdict


@dataclass(frozen=True)
class RecordedDecision:
    id: int
    actor: str
    verdict: str
    decided_at: datetime
    note: str = ""
    #: a rejection that handed the thread to a specialist (migrations/010)
    handover: bool = False
    #: the content decided on
    digest: str = ""


def record_decision(
    pool: ConnectionPool,
    *,
    thread_id: str,
    gate: str,
    checkpoint_id: str,
    verdict: str,
    actor: str,
    note: str,
    digest: str,
    detail: dict[str, Any] | None = None,
    handover: bool = False,
    answer: Any = None,
) -> RecordedDecision:
    """Insert the one decision for this gate visit, and its audit event in the same transaction
    (a decision is never recorded unaudited); AlreadyDecided if another got there first.
    `detail`: more for the audit row (the approval-chain stage an expiry ended); `handover`:
    a rejection that hands the thread to a specialist (audited as such)."""
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO approvals (thread_id, gate, checkpoint_id, decision, actor, note, digest, handover, answer) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, decided_at",
                (thread_id, gate, checkpoint_id, verdict, actor, note, digest, handover, None if answer is None else Jsonb(answer)),
            ).fetchone()
            audited = {"gate": gate, "digest": digest, "note": note[:200], **(detail or {})} | ({"handover": True} if handover else {})
            record_event_on(conn, thread_id, actor, f"decision_{verdict}", audited)
    except psycopg.errors.UniqueViolation:
        existing = decision_for(pool, thread_id, checkpoint_id)
        assert existing is not None  # the unique key just told us it exists
        raise AlreadyDecided(existing.actor, existing.decided_at, existing.verdict) from None
    return RecordedDecision(int(row["id"]), actor, verdict, row["decided_at"], note, handover, digest)


def decision_for(pool: ConnectionPool, thread_id: str, checkpoint_id: str) -> RecordedDecision | None:
    """The decision made at this gate visit (the checkpoint the thread waited at), note included."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, actor, decision, decided_at, note, handover, digest FROM approvals WHERE thread_id = %s AND checkpoint_id = %s",
            (thread_id, checkpoint_id),
        ).fetchone()
    return RecordedDecision(int(row["id"]), row["actor"], row["decision"], row["decided_at"], row["note"], row["handover"],
                            row["digest"]) if row else None


def latest_decision(pool: ConnectionPool, thread_id: str) -> dict[str, Any] | None:
    """The thread's most recent decision (actor, decision, decided_at, digest), for "already
    decided by" and for telling a repeated request from a competing one."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT actor, decision, decided_at, digest FROM approvals WHERE thread_id = %s ORDER BY id DESC LIMIT 1",
            (thread_id,),
        ).fetchone()


def decisions_of(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """Every decision of the thread, oldest first (gate, decision, actor, note, decided_at)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT gate, decision, actor, note, decided_at FROM approvals WHERE thread_id = %s ORDER BY id", (thread_id,)
        ).fetchall()
