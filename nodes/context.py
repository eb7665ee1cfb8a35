"""What every node may use at run time but must never persist: models, policy, database.

Passed as LangGraph's runtime context (`graph.stream(..., context=SignoffContext(...))`), so
tests can hand graphs scripted models and their own database without touching globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from psycopg_pool import ConnectionPool

from nodes.handover import Playbook, load_playbook
from nodes.models import ModelRegistry
from nodes.resilient import ResiliencePolicy


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SignoffContext:
    models: ModelRegistry
    pool: ConnectionPool
    policy: ResiliencePolicy = field(default_factory=ResiliencePolicy)
    #: Injected so deadline tests never sleep.
    clock: Callable[[], datetime] = utc_now
    #: Bound of the graphs' reject -> redraft/rewrite loops.
    max_redrafts: int = 2
    max_revisions: int = 3
    score_threshold: float = 0.8
    #: Calls in flight per model across the threads of this process (nodes.resilient.ModelLimiter);
    #: None: unlimited (one inline run makes one call at a time anyway).
    model_limiter: Any = None
    #: The judging models (SIGNOFF_REVIEW_MODEL: review scores, the support agents' hand-over
    #: decision), when they are not `models`; None: `models` judges too. See `reviewer`.
    review_models: ModelRegistry | None = None
    #: Where a node's own events (retry, fallback, researcher_started) go. None: LangGraph's
    #: `custom` stream (`runtime.stream_writer`), as an inline run streams them (nodes.resilient.emitter). A worker's run
    #: sets it per run instead (runtime/thread_runner.py `_run_claimed`): the `custom` stream mode makes
    #: LangGraph run every node on a pool thread and wake the run for each event, which cost a
    #: worker running 100 threads about a tenth of its CPU.
    emit: Callable[[dict[str, Any]], None] | None = None
    #: The hand-over playbook (SIGNOFF_HANDOVER_PLAYBOOK); None: the shipped one. See `handover`.
    playbook: Playbook | None = None

    def handover(self) -> Playbook:
        """The topics a specialist must handle (nodes/handover.py)."""
        return self.playbook if self.playbook is not None else load_playbook()

    def reviewer(self) -> ModelRegistry:
        """The models a judging node calls (the writing graphs' `review`, the support agents):
        SIGNOFF_REVIEW_MODEL's or the run's, less a fallback that may not judge."""
        return (self.review_models if self.review_models is not None else self.models).judging()

    def can_judge(self) -> bool:
        """Whether a judging node may ask `reviewer()` at all (ModelHandle.judges: not the local
        0.5B); when it may not, the node takes its rule instead of a made-up judgement."""
        return self.reviewer().primary.judges
