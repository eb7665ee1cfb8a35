"""Deciding over HTTP, with the CLI's rules: one decision per gate visit, bound to a digest,
refused past the deadline; then the thread is handed to a worker (a web request never runs
a graph). Every refusal is an HttpError with its status, and is audited by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint import jobs, threads
from checkpoint.settings import MAX_INPUT_BYTES

THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Review:
    """A thread as a reviewer sees it."""

    row: threads.ThreadRow
    gate: str | None
    visit: str | None  # the checkpoint it waits at, while at a gate
    content: str
    digest: str
    values: dict[str, Any]


def valid_thread_id(thread_id: str) -> str:
    if not THREAD_ID.fullmatch(thread_id):
        raise HttpError(400, "that is not a thread id (1-64 letters, digits, '.', '_' or '-')")
    return thread_id


def valid_text(text: Any, what: str, *, required: bool) -> str:
    if text is None or text == "":
        if required:
            raise HttpError(400, f"the {what} is empty: say what to change")
        return ""
    if not isinstance(text, str):
        raise HttpError(400, f"the {what} must be a string")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise HttpError(413, f"the {what} is over the {MAX_INPUT_BYTES}-byte limit: shorten it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no database column can store it
        raise HttpError(400, f"the {what} is not valid UTF-8 text: send plain text") from None
    if "\x00" in text:
        raise HttpError(400, f"the {what} contains a NUL character: remove it")
    if required and not text.strip():
        raise HttpError(400, f"the {what} is empty: say what to change")
    return text.strip()


def load(pool: ConnectionPool, thread_id: str) -> tuple[Any, Review]:
    """The thread's runner and what a reviewer sees; 404 if there is no such thread."""
    from runtime.thread_runner import ThreadNotFound, ThreadRunner
    from nodes.gates import content_digest

    valid_thread_id(thread_id)
    try:
        runner = ThreadRunner.for_thread(pool, thread_id)
    except ThreadNotFound:
        raise HttpError(404, f"no thread {thread_id!r}") from None
    snapshot = runner.snapshot(thread_id)
    # A decision already written into the thread (a worker has yet to run it on) is no longer awaiting one.
    awaiting = runner.row is not None and runner.row.status == "waiting" and not snapshot.values.get("decision")
    gate = runner.gate_of(snapshot) if awaiting else None
    content = runner.spec.review_content(snapshot.values) if gate else ""
    visit = str(snapshot.config["configurable"]["checkpoint_id"]) if gate and snapshot.config else None
    digest = content_digest(content) if gate else ""
    if gate and getattr(runner, "answers_interrupts", False):  # any LangGraph graph: its questions as stored when it settled
        content, digest = runner.row.review or "", runner.row.digest or ""
    return runner, Review(runner.row, gate, visit, content, digest, dict(snapshot.values))  # type: ignore[arg-type]


def decide(pool: ConnectionPool, thread_id: str, verdict: str, *, actor: str, note: str, expect: str | None,
           visit: str | None = None, now: datetime | None = None, handover: bool = False, token_id: int | None = None) -> dict[str, Any]:
    """Record the decision and queue the thread for a worker; what was recorded. `handover`: a
    rejection that gives a support thread to a specialist (runner.decide). `actor` is the
    owner of the reviewer token `token_id` the request came with (bearer or session)."""
    from checkpoint.decisions import decision_for
    from checkpoint.errors import Conflict, InvalidInput
    from runtime.thread_runner import DigestMismatch

    if verdict == "approved" and not expect:  # every route: an approval names the content it approves
        raise HttpError(400, "an approval needs the digest of the content you reviewed: reload the thread and approve from its page "
                             "(API: \"expect\" from GET /api/threads/ID)")
    runner, review = load(pool, thread_id)
    now = now or datetime.now(timezone.utc)
    if visit is not None and review.visit != visit:
        used = decision_for(pool, thread_id, visit)
        if used is not None and (used.actor, used.verdict, used.digest) == (actor, verdict, expect):
            return _repeated_answer(pool, thread_id, verdict, actor, used.digest)  # the same confirmation sent again
        if used is not None:
            raise HttpError(409, f"this link was already used: decided by {used.actor} at {used.decided_at:%Y-%m-%d %H:%M:%S %Z} ({used.verdict})")
        raise HttpError(409, "this link is for an earlier visit of the gate (the content was redrafted since): open the thread for the current draft")
    if review.gate is not None and review.row.deadline is not None and review.row.deadline <= now:
        jobs.enqueue(pool, thread_id, "deadline")  # a worker applies the gate's default action
        raise HttpError(409, f"the deadline passed at {review.row.deadline:%Y-%m-%d %H:%M %Z}: the gate's default action applies")
    try:
        progress = runner.decide(thread_id, verdict, actor=actor, note=note, expect_digest=expect, handover=handover,
                                 token_id=token_id)
    except InvalidInput as exc:
        raise HttpError(400, str(exc)) from None
    except Conflict as exc:  # decided first, moved on, or changed: unless it was this very decision, sent again
        repeated = _repeated(pool, thread_id, verdict, actor, expect or review.digest)
        if repeated is not None:
            return repeated
        raise HttpError(412 if isinstance(exc, DigestMismatch) else 409, str(exc)) from None
    except Exception:
        # Recorded, then something failed (writing it into the thread): a worker applies a
        # recorded decision, so this request is answered as recorded, never as an error.
        repeated = _repeated(pool, thread_id, verdict, actor, expect or review.digest)
        if repeated is None:
            raise
        return repeated
    if progress is not None:  # one stage of an approval chain approved; the thread waits for the next
        return {"thread_id": thread_id, "decision": "stage_approved", "actor": actor, "gate": review.gate,
                "digest": review.digest, "job": None, "waiting_for": progress.chain.waiting_for()}
    job = jobs.enqueue(pool, thread_id, "decision")
    from checkpoint.workers import any_accepting

    return {"thread_id": thread_id, "decision": verdict, "actor": actor, "gate": review.gate, "digest": review.digest,
            "job": job, "worker_running": any_accepting(pool)} | ({"handover": True} if handover else {})


def _repeated(pool: ConnectionPool, thread_id: str, verdict: str, actor: str, digest: str) -> dict[str, Any] | None:
    """The answer to a request that repeats the thread's latest decision (same person, same
    verdict, same content): a client that timed out, or sent it twice, is told it is recorded,
    as the first time, not that someone decided first."""
    from checkpoint.decisions import latest_decision

    latest = latest_decision(pool, thread_id)
    if latest is None or (latest["actor"], latest["decision"], latest["digest"]) != (actor, verdict, digest) or not digest:
        return None
    return _repeated_answer(pool, thread_id, verdict, actor, digest)


def _repeated_answer(pool: ConnectionPool, thread_id: str, verdict: str, actor: str, digest: str) -> dict[str, Any]:
    from checkpoint.workers import any_accepting

    active = jobs.active_job(pool, thread_id)
    row = threads.get(pool, thread_id)
    # The first request may have ended between recording and queueing: queue the run-on now.
    job = active["id"] if active else (jobs.enqueue(pool, thread_id, "decision") if row and row.status == "waiting" else None)
    return {"thread_id": thread_id, "decision": verdict, "actor": actor, "digest": digest, "job": job,
            "worker_running": any_accepting(pool), "already_recorded": True}
