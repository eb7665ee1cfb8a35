"""Approval chains: the stages an action must pass at its gate before the gate's decision is
recorded (checkpoint/policy.py says which stages).

Each stage approval is a row of `stage_approvals`, bound to the gate visit (checkpoint) and to
the digest of the content approved; the thread stays waiting at the same gate until the last
stage's quorum is met. The approval that meets it is the one gate decision (the approvals
table, as for any gate), so crash recovery, expiry and the one-decision-per-visit key work
unchanged.
A rejection by any stage's member ends the chain: it is the gate's decision at once; so does
the waiting stage's deadline passing (the gate's default action, its audit row naming the stage).

What a listing shows is worked out when it is shown, from the facts stored with the wait
(visit, digest, amount, currency: `approval_waits`) and the policy in force then, so `pending`
and `show` name the same stage and role a decision would apply.

Called by ThreadRunner.decide under the thread's row lock, so two approvers of one thread are
serialised and a quorum is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.policy import NotAllowed, Policy, Stage, current_policy


@dataclass(frozen=True)
class StageView:
    index: int  # 1-based
    stage: Stage
    approvers: tuple[str, ...]
    members: tuple[str, ...]

    @property
    def done(self) -> bool:
        return len(self.approvers) >= self.stage.quorum

    def who(self) -> str:
        if self.members:
            return f"{self.stage.quorum} of {', '.join(self.members)}"
        return f"{self.stage.quorum} reviewer{'s' if self.stage.quorum > 1 else ''} other than the requester, no roles configured"


@dataclass(frozen=True)
class Chain:
    stages: tuple[StageView, ...]
    requester: str | None
    #: who raised the amount of this content (`approve --edit`): proposers, who may not approve it
    barred: tuple[str, ...] = ()
    #: the amount is in a currency the policy has no thresholds for: every stage applies
    every_stage_because: str = ""

    @property
    def current(self) -> StageView | None:
        return next((s for s in self.stages if not s.done), None)

    @property
    def complete(self) -> bool:
        return self.current is None

    def waiting_for(self) -> str:
        """`support-lead (1 of alice, bob)`, for listings; '' once complete."""
        current = self.current
        if current is None:
            return ""
        got = f", {len(current.approvers)} so far" if current.approvers else ""
        return f"stage {current.index}/{len(self.stages)} {current.stage.name} ({current.who()}{got})"

    def lines(self) -> list[str]:
        out = []
        for view in self.stages:
            state = "approved by " + ", ".join(view.approvers) if view.done else (
                f"waiting for {view.who()}" + (f"; approved by {', '.join(view.approvers)}" if view.approvers else ""))
            out.append(f"stage {view.index}/{len(self.stages)} {view.stage.name}: {state}")
        if self.requester:
            out.append(f"requested by {self.requester}, who may not approve it")
        if self.barred:
            out.append(f"amount raised by {', '.join(self.barred)}, who may not approve it")
        if self.every_stage_because:
            out.append(self.every_stage_because)
        return out

    def as_json(self, deadline: datetime | None) -> dict[str, Any] | None:
        """The waiting stage for `show --json` / `pending --json` (README: the JSON table);
        None once complete. `deadline` is the thread's, which is the waiting stage's own."""
        current = self.current
        if current is None:
            return None
        return {"number": current.index, "of": len(self.stages), "name": current.stage.name, "role": current.stage.role,
                "needed": current.stage.quorum, "members": list(current.members), "approved_by": list(current.approvers),
                "deadline": deadline, "deadline_hours": current.stage.deadline_hours}


@dataclass(frozen=True)
class Wait:
    """What a thread's chain at one gate visit is computed from."""

    thread_id: str
    graph: str
    gate: str
    checkpoint_id: str
    digest: str
    amount_cents: int
    currency: str | None = None


def chains_for(pool: ConnectionPool, policy: Policy, waits: list[Wait]) -> dict[str, Chain]:
    """thread -> the chain for its content at its gate visit, with the approvals it has so far
    (three queries for any number of threads). Each approval counts for the stage that was
    waiting when it was given."""
    if not waits:
        return {}
    ids = [w.thread_id for w in waits]
    with pool.connection() as conn:
        approvals = conn.execute(
            "SELECT thread_id, checkpoint_id, digest, stage, role, actor FROM stage_approvals WHERE thread_id = ANY(%s) ORDER BY id",
            (ids,)).fetchall()
        requesters = {r["thread_id"]: r["actor"] for r in conn.execute(
            "SELECT DISTINCT ON (thread_id) thread_id, actor FROM audit_events WHERE thread_id = ANY(%s) AND kind = 'thread_started' "
            "ORDER BY thread_id, id", (ids,))}
        edits = conn.execute(
            "SELECT thread_id, detail FROM audit_events WHERE thread_id = ANY(%s) AND kind = 'content_edited' ORDER BY id", (ids,)).fetchall()
    chains = {}
    for wait in waits:
        rows = [r for r in approvals if (r["thread_id"], r["checkpoint_id"], r["digest"]) == (wait.thread_id, wait.checkpoint_id, wait.digest)]
        stages = policy.chain(wait.graph, wait.gate, wait.amount_cents, wait.currency)
        # An approval counts for the stage it was given at only while that stage still asks for the
        # same role: a policy loaded meanwhile that reorders or renames stages voids it, never
        # turns a support-lead approval into a finance one.
        views = tuple(StageView(n, stage, tuple(r["actor"] for r in rows if r["stage"] == n and r["role"] == stage.role), policy.members(stage))
                      for n, stage in enumerate(stages, start=1))
        barred = next((tuple(e["detail"].get("may_not_approve") or ()) for e in reversed(edits)
                       if e["thread_id"] == wait.thread_id and e["detail"].get("after_digest") == wait.digest
                       and e["detail"].get("visit") == wait.checkpoint_id), ())
        why = (f"every stage: the amount is in {wait.currency}, the policy's thresholds in {policy.currency}"
               if policy.foreign(wait.currency) else "")
        chains[wait.thread_id] = Chain(views, requesters.get(wait.thread_id), barred, why)
    return chains


def chain_of(pool: ConnectionPool, policy: Policy, *, graph: str, gate: str, thread_id: str, checkpoint_id: str,
             digest: str, amount_cents: int, currency: str | None = None) -> Chain:
    """The chain of one thread's content at this gate visit (see chains_for)."""
    return chains_for(pool, policy, [Wait(thread_id, graph, gate, checkpoint_id, digest, amount_cents, currency)])[thread_id]


@dataclass(frozen=True)
class Progress:
    """The outcome of a stage decision that did not (yet) decide the gate."""

    chain: Chain
    approved_stage: StageView | None
    again: bool = False  # the same person approving the same content again: nothing new counted

    @property
    def waiting(self) -> bool:
        return not self.chain.complete


def check_allowed(chain: Chain, actor: str, policy: Policy, verdict: str = "approved") -> StageView:
    """The stage `actor` decides now; NotAllowed with the reason otherwise. The requester may
    reject (withdraw) but never approve; only the waiting stage's members decide it."""
    current = chain.current
    assert current is not None
    if verdict == "approved" and chain.requester is not None and actor == chain.requester:
        raise NotAllowed(f"{actor} started this thread and may not decide its approval: ask a {current.stage.name} member")
    if verdict == "approved" and actor in chain.barred:
        raise NotAllowed(f"{actor} raised the amount of this refund, which makes it their proposal: another "
                         f"{current.stage.name} member must approve it")
    if policy.roles_configured and current.stage.role and actor not in current.members:
        raise NotAllowed(f"{actor} is not a member of {current.stage.role} ({', '.join(current.members) or 'no members'}), "
                         f"which decides stage {current.index} now")
    for view in chain.stages:
        if actor in view.approvers:
            raise NotAllowed(f"{actor} already approved stage {view.index} ({view.stage.name}) of this chain: "
                             f"another person must decide stage {current.index}")
    return current


def decide_stage(pool: ConnectionPool, conn: Any, *, graph: str, gate: str, thread_id: str, checkpoint_id: str, digest: str,
                 amount_cents: int, verdict: str, actor: str, note: str, now: datetime,
                 default_deadline_hours: float, currency: str | None = None) -> Progress | None:
    """Apply one person's decision to the chain. None: the gate's decision is to be recorded
    now (the chain completed, or it was a rejection); a Progress: recorded as a stage
    approval, the thread waits for the next one.

    `conn` is the connection holding the thread's row lock (in its transaction): the stage's
    writes commit with it, and updating the thread's deadline never waits on our own lock."""
    policy = current_policy(pool)
    chain = chain_of(pool, policy, graph=graph, gate=gate, thread_id=thread_id, checkpoint_id=checkpoint_id,
                     digest=digest, amount_cents=amount_cents, currency=currency)
    if chain.complete:  # an approval whose gate decision never got recorded (the process died)
        return None
    if verdict == "approved" and any(actor in v.approvers for v in chain.stages) and (
            chain.requester is None or actor != chain.requester) and actor not in chain.barred:
        return Progress(chain, None, again=True)
    stage = check_allowed(chain, actor, policy, verdict)
    if verdict != "approved":
        return None  # a rejection by a member of the waiting stage ends the chain
    after = StageView(stage.index, stage.stage, stage.approvers + (actor,), stage.members)
    updated = Chain(tuple(after if v.index == stage.index else v for v in chain.stages), chain.requester, chain.barred,
                    chain.every_stage_because)
    nxt = updated.current
    if nxt is None:
        # The approval that completes the chain is the gate's decision itself (approvals row and
        # decision_approved audit, written by the caller), so no crash can record one without the other.
        return None
    with conn.transaction():
        conn.execute(
            "INSERT INTO stage_approvals (thread_id, gate, checkpoint_id, digest, stage, role, actor, note) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (thread_id, gate, checkpoint_id, digest, stage.index, stage.stage.role, actor, note),
        )
        record_event_on(conn, thread_id, actor, "stage_approved", {
            "gate": gate, "stage": stage.index, "of": len(chain.stages), "role": stage.stage.role,
            "approvals": len(after.approvers), "quorum": stage.stage.quorum, "digest": digest})
        if nxt.index != stage.index:  # the next stage begins to wait: its own deadline and audit row
            hours = nxt.stage.deadline_hours or default_deadline_hours
            conn.execute("UPDATE threads SET deadline = %s, updated_at = now() WHERE thread_id = %s",
                         (now + timedelta(hours=hours), thread_id))
            record_event_on(conn, thread_id, "signoff", "stage_waiting", {
                "gate": gate, "stage": nxt.index, "role": nxt.stage.role, "members": list(nxt.members),
                "quorum": nxt.stage.quorum, "deadline_hours": hours})
            from checkpoint.notifications import cancel_visit_on, visit_key

            cancel_visit_on(conn, thread_id, visit_key(checkpoint_id, stage.index), f"stage {stage.index} approved before it was sent")
            _notify(conn, graph, gate, thread_id, visit_key(checkpoint_id, nxt.index), updated.waiting_for(), digest,
                    now + timedelta(hours=hours), now)
        _note_waiting(conn, thread_id, updated.waiting_for())
    return Progress(updated, after)


def _notify(conn: Any, graph: str, gate: str, thread_id: str, visit: str, waiting: str, digest: str,
            deadline: datetime, now: datetime) -> None:
    """The next stage's own notification (the notification outbox, one per stage like one per
    gate visit, keyed by visit and stage), queued in the stage approval's own transaction: a
    crash before that commits leaves neither, so nobody is told of a stage that never began,
    and the approval given again queues it once. Never raises."""
    from checkpoint.notifications import queue_for_gate_on

    queue_for_gate_on(conn, thread_id=thread_id, graph=graph, gate=gate, visit=visit, summary=f"waits for {waiting}",
                      digest=digest, deadline=deadline, now=now)


def _note_waiting(conn: Any, thread_id: str, text: str) -> None:
    """The words for a row written before migration 009's facts (kept current for those)."""
    conn.execute(
        "INSERT INTO approval_waits (thread_id, waiting_for) VALUES (%s, %s) "
        "ON CONFLICT (thread_id) DO UPDATE SET waiting_for = EXCLUDED.waiting_for, updated_at = now()",
        (thread_id, text),
    )


def on_wait(pool: ConnectionPool, spec: Any, thread_id: str, gate: str, checkpoint_id: str, digest: str, values: dict[str, Any]) -> Chain | None:
    """A thread began to wait at a gate: store what its chain is computed from, for `pending`
    and `show`, which read no checkpoint. The chain (its first waiting stage sets the
    deadline), or None when its content has no amount: then nothing is written here, and the
    caller clears a chain an earlier visit stored in the statement that marks the thread
    waiting (checkpoint.threads.mark_waiting, `clear_approval_wait`: one round trip, not two)."""
    wait = wait_of(spec, thread_id, gate, checkpoint_id, digest, values)
    if wait is None:
        return None
    chain = chains_for(pool, current_policy(pool), [wait])[thread_id]
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO approval_waits (thread_id, waiting_for, graph, gate, checkpoint_id, digest, amount_cents, currency) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id) DO UPDATE SET waiting_for = EXCLUDED.waiting_for, "
            "graph = EXCLUDED.graph, gate = EXCLUDED.gate, checkpoint_id = EXCLUDED.checkpoint_id, digest = EXCLUDED.digest, "
            "amount_cents = EXCLUDED.amount_cents, currency = EXCLUDED.currency, updated_at = now()",
            (thread_id, chain.waiting_for(), wait.graph, wait.gate, wait.checkpoint_id, wait.digest, wait.amount_cents, wait.currency),
        )
    return chain


@dataclass(frozen=True)
class Waiting:
    """What `pending`/`show` say a thread waits for: the chain under the policy in force now
    (None for a row stored before migration 009, which has only its words)."""

    text: str
    chain: Chain | None


def waiting(pool: ConnectionPool, thread_ids: list[str]) -> dict[str, Waiting]:
    """thread -> the stage it waits for (only threads with a chain still to complete), worked
    out now with the policy a decision would apply (a few queries for any number of threads)."""
    if not thread_ids:
        return {}
    with pool.connection() as conn:
        rows = conn.execute("SELECT * FROM approval_waits WHERE thread_id = ANY(%s)", (thread_ids,)).fetchall()
    waits = [Wait(r["thread_id"], r["graph"], r["gate"], r["checkpoint_id"], r["digest"], int(r["amount_cents"]), r["currency"])
             for r in rows if r["checkpoint_id"] is not None]
    chains = chains_for(pool, current_policy(pool), waits) if waits else {}
    out = {}
    for r in rows:
        chain = chains.get(r["thread_id"])
        text = chain.waiting_for() if chain is not None else r["waiting_for"]
        if text:
            out[r["thread_id"]] = Waiting(text, chain)
    return out


def waiting_for(pool: ConnectionPool, thread_ids: list[str]) -> dict[str, str]:
    """thread -> the stage it waits for, in words (only threads with a chain)."""
    return {tid: w.text for tid, w in waiting(pool, thread_ids).items()}


def wait_of(spec: Any, thread_id: str, gate: str, checkpoint_id: str, digest: str, values: dict[str, Any]) -> Wait | None:
    amount = spec.action_amount(values) if hasattr(spec, "action_amount") else None
    if amount is None:
        return None
    currency = spec.action_currency(values) if hasattr(spec, "action_currency") else None
    return Wait(thread_id, spec.name, gate, checkpoint_id, digest, amount, currency)


def describe(pool: ConnectionPool, spec: Any, thread_id: str, checkpoint_id: str, digest: str, values: dict[str, Any], gate: str) -> Chain | None:
    """The chain of what a thread waits on, or None when its content has no amount."""
    wait = wait_of(spec, thread_id, gate, checkpoint_id, digest, values)
    return None if wait is None else chains_for(pool, current_policy(pool), [wait])[thread_id]


def ensure_may_approve(pool: ConnectionPool, spec: Any, thread_id: str, gate: str, checkpoint_id: str, digest: str,
                       values: dict[str, Any], actor: str) -> None:
    """NotAllowed unless `actor` may approve the stage now waiting (checked before an edit, so
    nobody edits what they may not approve)."""
    chain = describe(pool, spec, thread_id, checkpoint_id, digest, values, gate)
    if chain is not None and not chain.complete:
        check_allowed(chain, actor, current_policy(pool))
