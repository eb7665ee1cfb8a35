"""Running any LangGraph graph as a Signoff thread: its gates are LangGraph's own (interrupt
points and interrupt()), a decision is recorded like every other (one per question and gate
visit, audited, bound to a digest) and the graph resumes with `Command(resume=...)`.

ThreadRunner supplies the rest unchanged: the run's claim, progress events, drains, the
mirror of where the thread stands in the threads table. A graph with async nodes runs on
LangGraph's async path (`astream` with AsyncPostgresSaver), everything else as before.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from langgraph.types import Command

from checkpoint import decisions, threads
from checkpoint.audit import record_event
from checkpoint.decisions import AlreadyDecided, record_decision
from checkpoint.errors import InvalidInput
from runtime.thread_runner import AwaitingDecision, DigestMismatch, EventSink, NotAtGate, Stop, ThreadRunner, config_for
from runtime.interrupts import Answer, Pending, answer_for, digest_of, jsonable, pending_of, review_text, summary_line
from runtime.versions import VersionConflict, held_channels, incompatibility, version_of

STATIC = ("before", "after")


class InterruptRunner(ThreadRunner):
    """A ThreadRunner for a graph that pauses where LangGraph pauses."""

    answers_interrupts = True

    def __init__(self, pool: Any, entry: Any, context: Any = None, graph: Any = None) -> None:
        from runtime.runs import bind, needs_async

        self.pool, self.entry, self.spec, self.context = pool, entry, entry.spec, context
        self.graph = graph if graph is not None else bind(entry, pool)
        self.is_async = needs_async(entry.graph)
        self._options: dict[str, dict[str, Any]] = {}

    # --- reading -------------------------------------------------------------------------

    def options(self, thread_id: str) -> dict[str, Any]:
        """What every run of the thread is given: its context and per-run interrupt points."""
        if thread_id not in self._options:
            row = self.thread_row(thread_id)
            self._options[thread_id] = dict(row.run_options or {}) if row is not None else {}
        return self._options[thread_id]

    def pending(self, snapshot: Any) -> list[Pending]:
        thread_id = snapshot.config["configurable"]["thread_id"] if snapshot.config else ""
        return pending_of(self.graph, snapshot, self.options(thread_id))

    def gate_of(self, snapshot: Any) -> str | None:
        pending = self.pending(snapshot)
        return pending[0].node if pending else None

    def version(self) -> str:
        return version_of(self.entry)

    def check_version(self, thread_id: str, snapshot: Any) -> None:
        """Refuse (VersionConflict, exit 4) a thread the graph deployed now cannot resume."""
        row = self.thread_row(thread_id)
        now = self.version()
        if row is None or row.graph_version in (None, now) or not snapshot.config:
            return
        gates = ([row.gate] if row.status == "waiting" and row.gate else []) + [p.node for p in self.pending(snapshot)]
        reason = incompatibility(self.graph, snapshot, gates, held_channels(self.graph, snapshot))
        if reason is not None:
            raise VersionConflict(f"thread {thread_id} started on {self.spec.name} version {row.graph_version}; version {now} "
                                  f"deployed here cannot resume it ({reason}): deploy {row.graph_version} again to finish it, "
                                  f"see `signoff graphs check`")

    # --- running -------------------------------------------------------------------------

    def start_thread(self, thread_id: str, graph_input: dict[str, Any], options: dict[str, Any], summary: str, *,
                     deadline_hours: float, actor: str, sink: EventSink, control: Any = None) -> Stop:
        threads.register(self.pool, thread_id, self.spec.name, summary=summary, graph_input=graph_input, deadline_hours=deadline_hours,
                         requested_by=actor, graph_version=self.version(), run_options=options)
        self._options[thread_id] = options
        record_event(self.pool, thread_id, actor, "thread_started", {"graph": self.spec.name, "version": self.version()})
        was, self.marked_running = self.marked_running, True
        try:
            return self._run(thread_id, graph_input, sink, control)
        finally:
            self.marked_running = was

    def resume(self, thread_id: str, sink: EventSink, control: Any = None) -> Stop:
        """Continue from the last checkpoint: with the recorded answers to its questions, past
        an approved interrupt point, or after a crash."""
        snapshot = self.snapshot(thread_id)
        self.check_version(thread_id, snapshot)
        if snapshot.values and not snapshot.tasks:
            return self.settle(thread_id)
        pending = self.pending(snapshot)
        graph_input: Any = None
        if pending:
            checkpoint_id = self._checkpoint_id(snapshot)
            recorded = answers_for(self.pool, thread_id, [p.visit(checkpoint_id) for p in pending])
            decided = [(p, recorded[p.visit(checkpoint_id)]) for p in pending if p.visit(checkpoint_id) in recorded]
            if not decided:
                row = self.thread_row(thread_id)
                if row is not None and row.status != "waiting":  # reached its gate and died before saying so
                    with self._claim(thread_id):
                        return self.settle(thread_id)
                raise AwaitingDecision(f"thread {thread_id} is waiting at gate {pending[0].node}: decide it (signoff show {thread_id})")
            static = [(p, d) for p, d in decided if p.kind in STATIC]
            if static:
                if static[0][1]["decision"] != "approved":
                    return self.settle(thread_id)  # stopped there by the reviewer
            else:
                graph_input = Command(resume={p.id: d["answer"] for p, d in decided})
        elif not snapshot.values:  # killed before the first checkpoint: start over from the input
            row = self.thread_row(thread_id)
            graph_input = row.input if row else None
        return self._run(thread_id, graph_input, sink, control)

    def _stream_options(self, thread_id: str, handle: EventSink) -> dict[str, Any]:
        options = self.options(thread_id)
        kwargs: dict[str, Any] = {"config": run_config(thread_id, options), "stream_mode": ["tasks", "messages", "custom"]}
        if options.get("context") is not None:
            kwargs["context"] = options["context"]
        for key, compiled in (("interrupt_before", self.graph.interrupt_before_nodes), ("interrupt_after", self.graph.interrupt_after_nodes)):
            if options.get(key):  # a run's own points replace the compiled ones in LangGraph: keep both
                kwargs[key] = "*" if compiled == "*" else list(compiled or ()) + [n for n in options[key] if n not in (compiled or ())]
        return kwargs

    def _stream(self, graph_input: Any, **options: Any) -> Iterator[Any]:
        from runtime.commanded import graph_input_of

        graph_input = graph_input_of(graph_input)  # a queued command.goto/update runs as LangGraph's Command
        if not self.is_async:
            return self.graph.stream(graph_input, **options)
        from runtime.async_stream import async_stream

        return async_stream(self, graph_input, options)

    def settle(self, thread_id: str) -> Stop:
        """Read where the thread stands and mirror it into the threads table."""
        snapshot = self.snapshot(thread_id)
        values = dict(snapshot.values)
        name = self.spec.name
        pending = self.pending(snapshot)
        if pending:
            checkpoint_id = self._checkpoint_id(snapshot)
            recorded = answers_for(self.pool, thread_id, [p.visit(checkpoint_id) for p in pending])
            for p in pending:
                decision = recorded.get(p.visit(checkpoint_id))
                if p.kind in STATIC and decision is not None and decision["decision"] != "approved":
                    outcome = f"stopped {p.kind} {p.node}: {decision['decision']} by {decision['actor']}"
                    threads.set_status(self.pool, thread_id, "finished")
                    return Stop(thread_id, name, "finished", outcome=outcome, values=values)
            digest = digest_of(pending, checkpoint_id)
            review = review_text(pending)
            gate = pending[0].node
            now = self.context.clock() if self.context else datetime.now(timezone.utc)
            from checkpoint.approval_chain import on_wait  # an amount the graph declares: its approval chain

            chain = on_wait(self.pool, self.spec, thread_id, gate, pending[0].visit(checkpoint_id), digest, values)
            hours = chain.current.stage.deadline_hours if chain is not None and chain.current is not None else None
            deadline = threads.mark_waiting(self.pool, thread_id, gate=gate, summary=summary_line(pending), digest=digest, review=review, now=now,
                                            hours=hours or None, clear_approval_wait=chain is None)
            if deadline is not None:
                from checkpoint.notifications import queue_for_gate  # one per gate visit and channel; never raises

                queue_for_gate(self.pool, thread_id=thread_id, graph=name, gate=gate, visit=checkpoint_id,
                               summary=summary_line(pending)[:200], digest=digest, deadline=deadline, now=now)
            return Stop(thread_id, name, "waiting", gate=gate, digest=digest, values=values)
        if snapshot.tasks:
            threads.set_status(self.pool, thread_id, "failed")
            return Stop(thread_id, name, "failed", error=f"stopped before {', '.join(t.name for t in snapshot.tasks)}", values=values)
        row = self.thread_row(thread_id)
        from runtime.starting import summary_of  # the request it started with, not the last question asked

        threads.set_status(self.pool, thread_id, "finished", summary=summary_of(row.input) if row and row.input else None)
        return Stop(thread_id, name, "finished", outcome=outcome_of(values), values=values)

    # --- deciding ------------------------------------------------------------------------

    def waiting_on(self, thread_id: str) -> tuple[Any, list[Pending], str]:
        """(snapshot, the questions not yet decided, the digest of all shown); NotAtGate or
        AlreadyDecided when there is nothing left to decide."""
        snapshot = self.snapshot(thread_id)
        self.check_version(thread_id, snapshot)  # before anything else: the graph here may not know the gate at all
        pending = self.pending(snapshot)
        if not pending:
            latest = self.latest_decision(thread_id)
            row = self.thread_row(thread_id)
            if latest is not None and row is not None and row.status != "waiting":
                raise AlreadyDecided(latest["actor"], latest["decided_at"], latest["decision"])
            raise NotAtGate(f"thread {thread_id} is not waiting at a gate: see `signoff show {thread_id}`")
        checkpoint_id = self._checkpoint_id(snapshot)
        recorded = answers_for(self.pool, thread_id, [p.visit(checkpoint_id) for p in pending])
        open_ = [p for p in pending if p.visit(checkpoint_id) not in recorded]
        if not open_:
            first = recorded[pending[0].visit(checkpoint_id)]
            raise AlreadyDecided(first["actor"], first["decided_at"], first["decision"])
        return snapshot, open_, digest_of(pending, checkpoint_id)

    def decide(self, thread_id: str, verdict: Any, *, actor: str, note: str = "", expect_digest: str | None = None,
               handover: bool = False, interrupt_id: str | None = None, feedback: str | None = None,
               edit_args: dict[str, Any] | None = None, ignore: bool = False, value: Any = None, token_id: int | None = None,
               seen: tuple[Any, list[Pending], str] | None = None, on_recorded: Callable[[Any], None] | None = None) -> Any:
        """Record one decision on one question (by interrupt id when several wait), bound to
        the digest of what was shown; the next run resumes the graph with its answer.
        `token_id`: the reviewer token the decision came through (None: an OS login, or Signoff).
        `seen`: what `waiting_on` just returned to this decider, so the checkpoint is not read
        again (under the lock it is checked still the newest, and the answers re-read, either
        way). `on_recorded(conn)`: more to write in the decision's own transaction (the job that
        runs the thread on), only once the decision is recorded.

        The checkpoint is read before the thread's row lock; under the lock every statement
        runs on the lock's own connection (HeldConnection), so a decider never holds one pooled
        connection while waiting for another."""
        if handover:
            raise InvalidInput(f"a {self.spec.name} thread cannot be handed over to a specialist: reject it with --feedback instead")
        if feedback is None and verdict == "rejected" and note:
            feedback = note  # a rejection's note is its feedback (the inbox and the HTTP API send only a note)
        from checkpoint.database import HeldConnection

        snapshot, open_, digest = seen if seen is not None else self.waiting_on(thread_id)
        seen_id = self._checkpoint_id(snapshot)
        with threads.locked(self.pool, thread_id) as locked:
            held = HeldConnection(locked)
            newest, decided = standing_under_lock(locked, thread_id, [p.visit(seen_id) for p in open_])
            if newest != seen_id:  # it moved on while this decider waited for the lock
                latest = decisions.latest_decision(held, thread_id)
                if latest is not None:
                    raise AlreadyDecided(latest["actor"], latest["decided_at"], latest["decision"])
                raise NotAtGate(f"thread {thread_id} is not waiting at a gate: see `signoff show {thread_id}`")
            open_ = [p for p in open_ if p.visit(seen_id) not in decided]
            if not open_:
                first = next(iter(decided.values()))
                raise AlreadyDecided(first["actor"], first["decided_at"], first["decision"])
            if expect_digest is not None and expect_digest != digest:
                raise DigestMismatch(f"what waits changed since you reviewed it (digest {digest}, you expected {expect_digest}): "
                                     f"run `signoff show {thread_id}` again")
            target = open_[0] if verdict == "expired" and interrupt_id is None else choose(open_, interrupt_id, thread_id)
            if verdict == "expired" and target.kind == "value":
                # No default answer to a question only a person can answer: it waits on, without a deadline
                # (so no sweep expires it again and again).
                locked.execute("UPDATE threads SET deadline = NULL WHERE thread_id = %s", (thread_id,))
                record_event(held, thread_id, actor, "deadline_passed", {"gate": target.node, "interrupt": target.id, "waits": True})
                raise NotAtGate(f"interrupt {target.id} has no default answer: it waits for `signoff answer`")
            answer: Answer = answer_for(target, verdict, feedback=feedback, edit_args=edit_args, ignore=ignore, value=value)
            amount = self.spec.action_amount(snapshot.values)
            if amount is not None and verdict in ("approved", "rejected"):  # its approval chain first (policy key graph.gate)
                from checkpoint.approval_chain import decide_stage

                row = self.thread_row(thread_id)
                progress = decide_stage(
                    held, locked, graph=self.spec.name, gate=target.node, thread_id=thread_id,
                    checkpoint_id=pending_visit(snapshot, open_, self), digest=digest, amount_cents=amount, verdict=verdict,
                    actor=actor, note=note, now=self.context.clock() if self.context else datetime.now(timezone.utc),
                    default_deadline_hours=row.deadline_hours if row else self.spec.deadline_hours,
                    currency=self.spec.action_currency(snapshot.values), token_id=token_id)
                if progress is not None:
                    return progress  # a stage approved; the thread waits for the next one
            detail = {"interrupt": target.id, "answer": jsonable(answer.resume)} | ({"token": token_id} if token_id is not None else {})
            record_decision(held, thread_id=thread_id, gate=target.node, checkpoint_id=target.visit(seen_id),
                            verdict=answer.verdict, actor=actor, note=note or feedback or "", digest=digest,
                            detail=detail, answer=jsonable(answer.resume))
            if on_recorded is not None:
                on_recorded(locked)
        return None


def run_config(thread_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """The run's config: the thread (Signoff's own keys always win) with what the run asked
    for in `config` (configurable values, tags, recursion limit; runtime/starting.py
    run_config_options keeps only those)."""
    config: dict[str, Any] = {"configurable": {**(options.get("configurable") or {}), **config_for(thread_id)["configurable"]}}
    if options.get("tags"):
        config["tags"] = list(options["tags"])
    if options.get("recursion_limit"):
        config["recursion_limit"] = int(options["recursion_limit"])
    return config


def pending_visit(snapshot: Any, open_: list[Pending], runner: InterruptRunner) -> str:
    """The gate visit an approval chain is kept under: the first question's, as settle stored it."""
    pending = runner.pending(snapshot)
    return pending[0].visit(runner._checkpoint_id(snapshot))


def outcome_of(values: dict[str, Any]) -> str:
    """How a finished thread ended, from the state's own words if it has them."""
    for key in ("outcome", "result", "answer", "status"):
        if isinstance(values.get(key), str) and values[key].strip():
            return values[key].strip().splitlines()[0][:200]
    return "done"


def choose(open_: list[Pending], interrupt_id: str | None, thread_id: str) -> Pending:
    """The question a decision is for: the one named, or the only one waiting."""
    if interrupt_id is not None:
        for p in open_:
            if p.id == interrupt_id or p.id.startswith(interrupt_id):
                return p
        raise InvalidInput(f"thread {thread_id} has no undecided interrupt {interrupt_id!r}: it waits on {', '.join(p.id for p in open_)}")
    if len(open_) > 1:
        raise InvalidInput(f"thread {thread_id} waits on {len(open_)} interrupts ({', '.join(p.id for p in open_)}): "
                           "decide one at a time with --interrupt ID")
    return open_[0]


def standing_under_lock(conn: Any, thread_id: str, visits: list[str]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(the id of the thread's newest checkpoint, the decisions recorded for these gate visits),
    read in one statement on `conn`, which holds the thread's row lock: what a decider checks
    before recording, in one round trip while the lock is held. The newest checkpoint is the
    one LangGraph's saver loads (the greatest id of the root namespace)."""
    rows = conn.execute(
        "SELECT newest.checkpoint_id AS newest, a.checkpoint_id, a.decision, a.actor, a.decided_at, a.answer "
        "FROM (SELECT (SELECT checkpoint_id FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '' "
        "              ORDER BY checkpoint_id DESC LIMIT 1) AS checkpoint_id) newest "
        "LEFT JOIN approvals a ON a.thread_id = %(t)s AND a.checkpoint_id = ANY(%(v)s)",
        {"t": thread_id, "v": visits}).fetchall()
    newest = rows[0]["newest"] if rows else None
    decided = {r["checkpoint_id"]: {k: r[k] for k in ("checkpoint_id", "decision", "actor", "decided_at", "answer")}
               for r in rows if r["checkpoint_id"] is not None}
    return (str(newest) if newest is not None else None), decided


def answers_for(pool: Any, thread_id: str, visits: list[str]) -> dict[str, dict[str, Any]]:
    """The decisions recorded for these gate visits (decision, actor, decided_at, answer)."""
    if not visits:
        return {}
    with pool.connection() as conn:
        rows = conn.execute("SELECT checkpoint_id, decision, actor, decided_at, answer FROM approvals "
                            "WHERE thread_id = %s AND checkpoint_id = ANY(%s)", (thread_id, visits)).fetchall()
    return {r["checkpoint_id"]: r for r in rows}
