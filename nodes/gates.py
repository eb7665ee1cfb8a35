"""Human sign-off gates: the decision a person makes, how it enters the graph, how it is kept.

A gate is a node compiled with `interrupt_before`. The CLI records the decision (approvals
table, checkpoint/decisions.py), writes it into the thread with `update_state`, and resumes; the gate node then moves
it from `decision` to `last_decision`, so resuming a gate without a fresh decision is refused
instead of silently reusing an old one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Literal

from typing_extensions import NotRequired, TypedDict

from checkpoint.decisions import AlreadyDecided, RecordedDecision, decision_for, record_decision  # noqa: F401 - their home is checkpoint/
from checkpoint.errors import Conflict

Verdict = Literal["approved", "rejected", "expired"]


class Decision(TypedDict):
    gate: str
    verdict: Verdict
    actor: str
    note: str
    at: str
    #: a rejection that gives the thread to a specialist instead of asking for a redraft
    #: (`signoff reject --hand-over`; graphs whose GraphSpec.hands_over is set)
    handover: NotRequired[bool]


class GateError(Conflict):
    """A gate was resumed without a decision for it."""


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


#: the note a hand-over is recorded with, so every listing of decisions says what it was
HANDOVER_NOTE = "handed over to a specialist"


def handover_note(note: str) -> str:
    return f"{HANDOVER_NOTE}: {note}" if note else HANDOVER_NOTE


def as_state_decision(gate: str, recorded: RecordedDecision, note: str, *, handover: bool = False) -> Decision:
    return Decision(gate=gate, verdict=recorded.verdict, actor=recorded.actor, note=note, at=recorded.decided_at.isoformat(),  # type: ignore[typeddict-item]
                    **({"handover": True} if handover else {}))
