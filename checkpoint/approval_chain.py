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

Approvals are counted against the policy that applies when they are counted
(checkpoint.policy.policy_for_request): an approval by someone no longer a member of the
stage's role no longer counts, nor one given through a reviewer token the requester minted
after the request. No one approves their own request: not the requester, not whoever raised
its amount, not through such a token, whichever route the decision comes by (CLI, API, inbox,
signed link: all reach decide_stage).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.policy import DEFAULT, NotAllowed, Policy, Stage, connection_for, current_policy, policy_for_request


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
    #: when the requester started the thread, and the policy the chain is counted against
    requested_at: datetime | None = None
    policy: Policy = DEFAULT

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
        """The waiting stage for `show --json` / `pending --json` (docs/json-output.md);
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


def chains_for(pool: ConnectionPool, waits: list[Wait], conn: Any = None) -> dict[str, Chain]:
    """thread -> the chain for its content at its gate visit, with the approvals that count for
    it now (a few queries for any number of threads). Each approval counts for the stage that
    was waiting when it was given, under the policy that applies to the thread's request now.
    `conn`: the connection the caller holds (the thread's row lock), used for every read."""
    if not waits:
        return {}
    ids = [w.thread_id for w in waits]
    with connection_for(pool, conn) as c:
        approvals = c.execute(
            "SELECT s.thread_id, s.checkpoint_id, s.digest, s.stage, s.role, s.actor, t.created_by AS minted_by, "
            "t.created_through AS minted_through, t.created_at AS minted_at "
            "FROM stage_approvals s LEFT JOIN reviewer_tokens t ON t.id = s.token_id WHERE s.thread_id = ANY(%s) ORDER BY s.id",
            (ids,)).fetchall()
        requests = {r["thread_id"]: r for r in c.execute(
            "SELECT thread_id, requested_by, created_at FROM threads WHERE thread_id = ANY(%s)", (ids,))}
        edits = c.execute(
            "SELECT thread_id, detail FROM audit_events WHERE thread_id = ANY(%s) AND kind = 'content_edited' ORDER BY id", (ids,)).fetchall()
        newest = current_policy(pool, c)
        policies = {}
        for wait in waits:
            request = requests.get(wait.thread_id) or {}
            policies[wait.thread_id] = policy_for_request(pool, request.get("requested_by"), request.get("created_at"), c, newest)
    chains = {}
    for wait in waits:
        policy = policies[wait.thread_id]
        request = requests.get(wait.thread_id) or {}
        requester, requested_at = request.get("requested_by"), request.get("created_at")
        rows = [r for r in approvals if (r["thread_id"], r["checkpoint_id"], r["digest"]) == (wait.thread_id, wait.checkpoint_id, wait.digest)
                and r["actor"] != requester
                and not minted_for_own_request((r["minted_by"], r["minted_through"]), r["minted_at"], requester, requested_at)]
        stages = policy.chain(wait.graph, wait.gate, wait.amount_cents, wait.currency)
        # An approval counts for the stage it was given at only while that stage still asks for the
        # same role and its giver is still one of the role's members: a policy loaded meanwhile that
        # reorders or renames stages, or removes the member, voids it; it never turns a
        # support-lead approval into a finance one.
        views = tuple(StageView(n, stage, tuple(r["actor"] for r in rows if r["stage"] == n and r["role"] == stage.role
                                                and (not policy.members(stage) or r["actor"] in policy.members(stage))),
                                policy.members(stage))
                      for n, stage in enumerate(stages, start=1))
        barred = next((tuple(e["detail"].get("may_not_approve") or ()) for e in reversed(edits)
                       if e["thread_id"] == wait.thread_id and e["detail"].get("after_digest") == wait.digest
                       and e["detail"].get("visit") == wait.checkpoint_id), ())
        why = (f"every stage: the amount is in {wait.currency}, the policy's thresholds in {policy.currency}"
               if policy.foreign(wait.currency) else "")
        chains[wait.thread_id] = Chain(views, requester, barred, why, requested_at, policy)
    return chains


def minted_for_own_request(minted_by: tuple[str | None, ...], minted_at: datetime | None, requester: str | None,
                           requested_at: datetime | None) -> bool:
    """A reviewer token the requester minted after the request (themselves, or through a token
    they had minted: `minted_by` is both names): it never counts for that request."""
    return (requester is not None and requester in minted_by and minted_at is not None and requested_at is not None
            and minted_at > requested_at)


def chain_of(pool: ConnectionPool, *, graph: str, gate: str, thread_id: str, checkpoint_id: str,
             digest: str, amount_cents: int, currency: str | None = None, conn: Any = None) -> Chain:
    """The chain of one thread's content at this gate visit (see chains_for)."""
    return chains_for(pool, [Wait(thread_id, graph, gate, checkpoint_id, digest, amount_cents, currency)], conn)[thread_id]


@dataclass(frozen=True)
class Token:
    """The reviewer token a decision came through: who minted it, when."""

    id: int
    created_by: str | None
    created_at: datetime
    created_through: str | None = None


def token_of(pool: ConnectionPool, token_id: int | None, conn: Any = None) -> Token | None:
    if token_id is None:
        return None
    with connection_for(pool, conn) as c:
        row = c.execute("SELECT id, created_by, created_at, created_through FROM reviewer_tokens WHERE id = %s", (token_id,)).fetchone()
    return Token(int(row["id"]), row["created_by"], row["created_at"], row["created_through"]) if row else None


@dataclass(frozen=True)
class Progress:
    """The outcome of a stage decision that did not (yet) decide the gate."""

    chain: Chain
    approved_stage: StageView | None
    again: bool = False  # the same person approving the same content again: nothing new counted

    @property
    def waiting(self) -> bool:
        return not self.chain.complete


def ensure_not_own(chain: Chain, actor: str, token: Token | None = None) -> None:
    """NotAllowed when approving would be `actor` approving their own request: they started
    it, they raised its amount, or the token they decide through was minted by the requester
    after the request (whoever it names)."""
    name = chain.current.stage.name if chain.current else "review"
    if chain.requester is not None and actor == chain.requester:
        raise NotAllowed(f"{actor} started this thread and may not decide its approval: ask a {name} member")
    if actor in chain.barred:
        raise NotAllowed(f"{actor} raised the amount of this refund, which makes it their proposal: another "
                         f"{name} member must approve it")
    if token is not None and minted_for_own_request((token.created_by, token.created_through), token.created_at, chain.requester,
                                                    chain.requested_at):
        raise NotAllowed(f"this reviewer token was created by {chain.requester}, who requested this refund, after the request: "
                         f"it cannot approve it; ask an administrator other than {chain.requester} for a token")


def check_allowed(chain: Chain, actor: str, verdict: str = "approved", token: Token | None = None) -> StageView:
    """The stage `actor` decides now; NotAllowed with the reason otherwise. The requester may
    reject (withdraw) but never approve; only the waiting stage's members decide it."""
    current = chain.current
    assert current is not None
    if verdict == "approved":
        ensure_not_own(chain, actor, token)
    if chain.policy.roles_configured and current.stage.role and actor not in current.members:
        raise NotAllowed(f"{actor} is not a member of {current.stage.role} ({', '.join(current.members) or 'no members'}), "
                         f"which decides stage {current.index} now")
    for view in chain.stages:
        if actor in view.approvers:
            raise NotAllowed(f"{actor} already approved stage {view.index} ({view.stage.name}) of this chain: "
                             f"another person must decide stage {current.index}")
    return current


def check_closing(chain: Chain, actor: str, verdict: str, token: Token | None = None) -> None:
    """A chain already complete when a decision arrives (its approvals carried over to a lowered
    amount, or a policy loaded since asks for less): the decision is recorded from someone the
    policy gives a role (anyone, with no roles configured), or the requester withdrawing; never
    the requester's own approval."""
    if verdict == "approved":
        ensure_not_own(chain, actor, token)
    elif actor == chain.requester:
        return
    members = {m for names in chain.policy.roles.values() for m in names}
    if chain.policy.roles_configured and actor not in members:
        raise NotAllowed(f"{actor} has no role in the approval policy ({chain.policy.source}), so may not decide this refund")


def decide_stage(pool: ConnectionPool, conn: Any, *, graph: str, gate: str, thread_id: str, checkpoint_id: str, digest: str,
                 amount_cents: int, verdict: str, actor: str, note: str, now: datetime,
                 default_deadline_hours: float, currency: str | None = None, token_id: int | None = None) -> Progress | None:
    """Apply one person's decision to the chain. None: the gate's decision is to be recorded
    now (the chain completed, or it was a rejection); a Progress: recorded as a stage
    approval, the thread waits for the next one. `token_id`: the reviewer token the decision
    came through (None: the CLI as an OS login).

    `conn` is the connection holding the thread's row lock (in its transaction): the chain is
    read and the stage's writes commit through it, and updating the thread's deadline never
    waits on our own lock."""
    chain = chain_of(pool, graph=graph, gate=gate, thread_id=thread_id, checkpoint_id=checkpoint_id,
                     digest=digest, amount_cents=amount_cents, currency=currency, conn=conn)
    token = token_of(pool, token_id, conn)
    if chain.complete:
        check_closing(chain, actor, verdict, token)
        return None
    if verdict == "approved":
        ensure_not_own(chain, actor, token)
        if any(actor in v.approvers for v in chain.stages):
            return Progress(chain, None, again=True)
    stage = check_allowed(chain, actor, verdict, token)
    if verdict != "approved":
        return None  # a rejection by a member of the waiting stage ends the chain
    after = StageView(stage.index, stage.stage, stage.approvers + (actor,), stage.members)
    updated = replace(chain, stages=tuple(after if v.index == stage.index else v for v in chain.stages))
    nxt = updated.current
    if nxt is None:
        # The approval that completes the chain is the gate's decision itself (approvals row and
        # decision_approved audit, written by the caller), so no crash can record one without the other.
        return None
    with conn.transaction():
        conn.execute(
            # An earlier approval of this content by the same person that no longer counts (its
            # stage or role changed, or they left the role and came back to another) is replaced.
            "INSERT INTO stage_approvals (thread_id, gate, checkpoint_id, digest, stage, role, actor, note, token_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id, checkpoint_id, digest, actor) DO UPDATE SET "
            "stage = EXCLUDED.stage, role = EXCLUDED.role, note = EXCLUDED.note, token_id = EXCLUDED.token_id, decided_at = now()",
            (thread_id, gate, checkpoint_id, digest, stage.index, stage.stage.role, actor, note, token_id),
        )
        record_event_on(conn, thread_id, actor, "stage_approved", {
            "gate": gate, "stage": stage.index, "of": len(chain.stages), "role": stage.stage.role,
            "approvals": len(after.approvers), "quorum": stage.stage.quorum, "digest": digest, "policy_version": chain.policy.version}
            | token_detail(token))
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
    chain = chains_for(pool, [wait])[thread_id]
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
    chains = chains_for(pool, waits) if waits else {}
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
    return None if wait is None else chains_for(pool, [wait])[thread_id]


def ensure_may_approve(pool: ConnectionPool, spec: Any, thread_id: str, gate: str, checkpoint_id: str, digest: str,
                       values: dict[str, Any], actor: str, token_id: int | None = None) -> None:
    """NotAllowed unless `actor` may approve the stage now waiting (checked before an edit, so
    nobody edits what they may not approve)."""
    chain = describe(pool, spec, thread_id, checkpoint_id, digest, values, gate)
    if chain is not None and not chain.complete:
        check_allowed(chain, actor, "approved", token_of(pool, token_id))


def token_detail(token: Token | None) -> dict[str, Any]:
    """What an approval's audit row says of the token it came through (nothing for an OS login)."""
    return {} if token is None else {"token": token.id, "token_created_by": token.created_by}
