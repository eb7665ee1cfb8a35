"""Human sign-off gates: the decision a person makes, how it enters the graph, how it is kept.

A gate is a node compiled with `interrupt_before`. The CLI records the decision (approvals
table), writes it into the thread with `update_state`, and resumes; the gate node then moves
it from `decision` to `last_decision`, so resuming a gate without a fresh decision is refused
instead of silently reusing an old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal

import psycopg
from psycopg_pool import ConnectionPool
from typing_extensions import TypedDict

from checkpoint.errors import Conflict

Verdict = Literal["approved", "rejected", "expired"]


class Decision(TypedDict):
    gate: str
    verdict: Verdict
    actor: str
    note: str
    at: str


class GateError(Conflict):
    """A gate was resumed without a decision for it."""


class AlreadyDecided(Conflict):
    """Someone else decided this gate visit first."""

    def __init__(self, actor: str, at: datetime, verdict: str) -> None:
        super().__init__(f"already decided by {actor} at {at:%Y-%m-%d %H:%M:%S %Z} ({verdict})")
        self.actor, self.at, self.verdict = actor, at, verdict


def gate_node(gate: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The node a graph pauses before; it only accepts the decision made for it."""

    def apply_decision(state: dict[str, Any]) -> dict[str, Any]:
        decision = state.get("decision")
        if not decision or decision.get("gate") != gate:
            raise GateError(f"gate {gate!r} resumed without a decision: use signoff approve/reject")
        return {"decision": None, "last_decision": decision, "decisions": [decision]}

    apply_decision.__name__ = gate
    return apply_decision


def content_digest(text: str) -> str:
    """Short fingerprint of what a reviewer is asked to sign off, for `approve --expect`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RecordedDecision:
    id: int
    actor: str
    verdict: str
    decided_at: datetime


def record_decision(
    pool: ConnectionPool,
    *,
    thread_id: str,
    gate: str,
    checkpoint_id: str,
    verdict: Verdict,
    actor: str,
    note: str,
    digest: str,
) -> RecordedDecision:
    """Insert the one decision for this gate visit, and its audit event in the same transaction
    (a decision is never recorded unaudited); AlreadyDecided if another got there first."""
    from nodes.tools import record_event_on

    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO approvals (thread_id, gate, checkpoint_id, decision, actor, note, digest) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, decided_at",
                (thread_id, gate, checkpoint_id, verdict, actor, note, digest),
            ).fetchone()
            record_event_on(conn, thread_id, actor, f"decision_{verdict}", {"gate": gate, "digest": digest, "note": note[:200]})
    except psycopg.errors.UniqueViolation:
        existing = decision_for(pool, thread_id, checkpoint_id)
        assert existing is not None  # the unique key just told us it exists
        raise AlreadyDecided(existing.actor, existing.decided_at, existing.verdict) from None
    return RecordedDecision(int(row["id"]), actor, verdict, row["decided_at"])


def decision_for(pool: ConnectionPool, thread_id: str, checkpoint_id: str) -> RecordedDecision | None:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, actor, decision, decided_at FROM approvals WHERE thread_id = %s AND checkpoint_id = %s",
            (thread_id, checkpoint_id),
        ).fetchone()
    return RecordedDecision(int(row["id"]), row["actor"], row["decision"], row["decided_at"]) if row else None


def as_state_decision(gate: str, recorded: RecordedDecision, note: str) -> Decision:
    return Decision(gate=gate, verdict=recorded.verdict, actor=recorded.actor, note=note, at=recorded.decided_at.isoformat())  # type: ignore[typeddict-item]
