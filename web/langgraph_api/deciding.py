"""A run's `command.resume` is a reviewer's decision, recorded like every other (runner.decide:
one per interrupt and gate visit, audited, bound to the digest of what waits, through the
approval chain, never by the thread's requester where a chain says so) with the token's owner
as the actor. LangGraph's resume values are read as the verdicts they mean: an Agent Inbox
accept / edit / response / ignore, a HumanInTheLoopMiddleware approve / edit / reject, or a
free value. An answer to an interrupt that no longer waits (answered, past its deadline,
replaced by a redraft) is refused with 409, where LangGraph's server would accept it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from checkpoint import jobs
from web.decide import HttpError


def verdict_for(pending: Any, value: Any) -> tuple[str, dict[str, Any]]:
    """(verdict, runner.decide keywords) for a resume value given to one interrupt."""
    if pending.kind in ("before", "after"):
        return ("rejected", {"note": "stopped"}) if value is False else ("approved", {})
    if pending.kind == "inbox":
        answers = value if isinstance(value, list) else [value]
        kinds = [a.get("type") if isinstance(a, dict) else None for a in answers]
        if len(answers) == 1 and kinds[0] in ("accept", "edit", "response", "ignore"):
            a = answers[0]
            if kinds[0] == "accept":
                return "approved", {}
            if kinds[0] == "edit":
                args = (a.get("args") or {}).get("args") if isinstance(a.get("args"), dict) else None
                if not isinstance(args, dict):
                    raise HttpError(422, "an Agent Inbox edit is {\"type\": \"edit\", \"args\": {\"action\": NAME, \"args\": {...}}}")
                return "approved", {"edit_args": args}
            if kinds[0] == "ignore":
                return "rejected", {"ignore": True}
            feedback = a.get("args")
            if not isinstance(feedback, str) or not feedback.strip():
                raise HttpError(422, "an Agent Inbox response needs its text in args")
            return "rejected", {"feedback": feedback, "note": feedback}
        if kinds and all(k == "accept" for k in kinds):
            return "approved", {}
        return "answered", {"value": value}
    if pending.kind == "hitl":
        decisions = value.get("decisions") if isinstance(value, dict) else None
        if isinstance(decisions, list) and decisions and all(isinstance(d, dict) for d in decisions):
            kinds = {d.get("type") for d in decisions}
            if kinds == {"approve"}:
                return "approved", {}
            if len(decisions) == 1 and kinds == {"edit"}:
                edited = decisions[0].get("edited_action") or {}
                if isinstance(edited.get("args"), dict):
                    return "approved", {"edit_args": edited["args"]}
            if kinds == {"reject"}:
                message = "; ".join(str(d.get("message") or "rejected") for d in decisions)
                return "rejected", {"feedback": message, "note": message}
        return "answered", {"value": value}
    return "answered", {"value": value}


def resume_with(pool: Any, thread_id: str, resume: Any, actor: str, now: datetime | None = None, *,
                token_id: int | None = None, row: Any = None) -> tuple[int | None, bool, str]:
    """Record the decisions a resume carries; (the job that runs the thread on, or None when
    an approval chain waits for its next stage; whether any stage is still waiting; the
    checkpoint the thread waited at). `row`: the thread's row as the caller just read it.

    The checkpoint is read once (every decision is checked against it again under the
    thread's row lock), and the job that runs the thread on is queued in the last decision's
    own transaction: recorded and queued together, or neither."""
    from runtime.thread_runner import ThreadRunner

    runner = ThreadRunner.for_row(pool, row) if row is not None else ThreadRunner.for_thread(pool, thread_id)
    if not getattr(runner, "answers_interrupts", False):
        raise HttpError(422, f"thread {thread_id} runs Signoff's own graph {runner.spec.name}: decide it with approve/reject")
    row = runner.row
    now = now or datetime.now(timezone.utc)
    seen = runner.waiting_on(thread_id)  # AlreadyDecided / NotAtGate: 409
    snapshot, open_, digest = seen
    if row is not None and row.deadline is not None and row.deadline <= now:
        jobs.enqueue(pool, thread_id, "deadline")  # a worker applies the gate's default answer
        raise HttpError(409, f"the deadline passed at {row.deadline:%Y-%m-%d %H:%M %Z}: the interrupt's default answer applies")
    every = runner.pending(snapshot)
    ids = {p.id for p in every}
    if isinstance(resume, dict) and resume and all(k in ids or _looks_like_id(k) for k in resume):
        answers = list(resume.items())
    else:
        if len(open_) > 1:
            raise HttpError(422, f"thread {thread_id} waits on {len(open_)} interrupts: resume with a map by interrupt id "
                                 f"({', '.join(p.id for p in open_)})")
        answers = [(open_[0].id, resume)]
    waiting_stage = False
    queued: list[int] = []
    for n, (interrupt_id, value) in enumerate(answers, 1):
        target = next((p for p in open_ if p.id == interrupt_id), None)
        if target is None:
            why = "already answered" if interrupt_id in ids else "no longer pending (answered, expired or replaced)"
            raise HttpError(409, f"interrupt {interrupt_id} of thread {thread_id} is {why}: read threads.get_state() for what waits now")
        verdict, options = verdict_for(target, value)
        note = options.pop("note", "")
        last = n == len(answers) and not waiting_stage  # the thread runs on once all are recorded, no stage waiting
        progress = runner.decide(thread_id, verdict, actor=actor, note=note, expect_digest=digest, interrupt_id=interrupt_id,
                                 token_id=token_id, seen=seen,
                                 on_recorded=(lambda conn: queued.append(job_on(conn, thread_id, "decision"))) if last else None,
                                 **options)
        waiting_stage = waiting_stage or progress is not None
    checkpoint = str(snapshot.config["configurable"]["checkpoint_id"])
    if waiting_stage:
        return None, True, checkpoint
    return (queued[0] if queued else job_for(pool, thread_id, "decision")), False, checkpoint


def _looks_like_id(key: Any) -> bool:
    """An interrupt id as LangGraph makes them (32 hex digits), or an interrupt point's."""
    return isinstance(key, str) and (len(key) == 32 and all(c in "0123456789abcdef" for c in key) or key.startswith(("before:", "after:")))


def job_on(conn: Any, thread_id: str, kind: str) -> int:
    """Queue a job for the thread in the transaction open on `conn` (or take the one already
    waiting for it)."""
    from checkpoint.database import HeldConnection

    job = jobs.enqueue_on(conn, thread_id, kind)  # type: ignore[arg-type]
    if job is None:
        active = jobs.active_job(HeldConnection(conn), thread_id)  # type: ignore[arg-type]
        assert active is not None
        job = int(active["id"])
    return job


def job_for(pool: Any, thread_id: str, kind: str) -> int:
    """Queue a job for the thread (or take the one already waiting for it)."""
    with pool.connection() as conn, conn.transaction():
        return job_on(conn, thread_id, kind)
