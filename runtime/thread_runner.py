"""Running threads: start, resume, sign off; turns LangGraph's stream into plain events.

The CLI renders the events; tests read them. Where a thread stopped is always read back
from the checkpoint afterwards, never inferred from the stream.
"""

from __future__ import annotations

import functools
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Literal

from langchain_core.messages import AIMessageChunk
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl
from langgraph.types import StateSnapshot
from psycopg_pool import ConnectionPool

from checkpoint import threads
from checkpoint.events import EventWriter
from checkpoint.database import HeldConnection, is_connection_error, make_saver
from checkpoint.errors import Conflict, InvalidInput, NotFound, SignoffError
from graphs.registry import GraphSpec
from nodes.context import SignoffContext
from checkpoint import decisions
from checkpoint.audit import record_event
from checkpoint.decisions import AlreadyDecided, decision_for, record_decision
from nodes.gates import Verdict, as_state_decision, content_digest, handover_note
from observability.hooks import UNOBSERVED, decided, observing_run
from runtime.message_chunks import chunk_event

Event = dict[str, Any]
EventSink = Callable[[Event], None]


class ThreadNotFound(NotFound):
    pass


class NotAtGate(Conflict):
    pass


class DigestMismatch(Conflict):
    """The expected digest was the content's at an earlier gate visit: it changed since."""


class UnknownDigest(InvalidInput):
    """The expected digest was never the thread's content (mistyped, or another thread's)."""


class UnknownGraph(SignoffError):
    """A stored thread names a graph this version does not ship."""


class AwaitingDecision(Conflict):
    """Resume was asked of a thread that waits for a person, not for a process."""


@dataclass(frozen=True)
class Stop:
    """How a run ended: waiting at a gate, finished, or failed."""

    thread_id: str
    graph: str
    status: Literal["waiting", "finished", "failed", "interrupted"]
    gate: str | None = None
    outcome: str = ""
    error: str | None = None
    digest: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


def config_for(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


class ThreadRunner:
    """One graph compiled against the database, with the operations the CLI offers on it."""

    #: Where runs persist their progress events for `signoff watch`: a worker shares one
    #: writer among its runs (and writes each stop with its job); None: each run has its own.
    progress: EventWriter | None = None
    #: Events reach the run by direct calls rather than LangGraph's messages/custom stream
    #: modes (`_stream_options`); a worker's runs, whose events only go to the database.
    direct_events: bool = False
    #: The thread is already marked running (a worker's claim of a queued thread did it).
    marked_running: bool = False
    #: The thread's row as `for_thread` read it: an operation reads it once, then keeps what
    #: it writes itself (expire_if_due, resume before the run start from it).
    row: threads.ThreadRow | None = None

    def __init__(self, pool: ConnectionPool, spec: GraphSpec, context: SignoffContext | None = None) -> None:
        self.pool = pool
        self.spec = spec
        self.context = context
        self.graph = spec.build().compile(checkpointer=make_saver(pool), interrupt_before=list(spec.gates))

    @classmethod
    def for_thread(cls, pool: ConnectionPool, thread_id: str, context: SignoffContext | None = None) -> "ThreadRunner":
        row = threads.get(pool, thread_id)
        if row is None:
            raise ThreadNotFound(f"no thread {thread_id!r}: list threads with `signoff pending`")
        return cls.for_row(pool, row, context)

    @classmethod
    def for_row(cls, pool: ConnectionPool, row: threads.ThreadRow, context: SignoffContext | None = None) -> "ThreadRunner":
        """The runner of a thread whose row the caller has just read (not read again)."""
        from runtime.runs import runner_for  # any graph: Signoff's own, or a project's

        runner = runner_for(cls, pool, row, context)
        runner.row = row
        return runner

    # --- reading -------------------------------------------------------------------------

    def snapshot(self, thread_id: str) -> StateSnapshot:
        return self.graph.get_state(config_for(thread_id))

    def gate_of(self, snapshot: StateSnapshot) -> str | None:
        pending = [node for node in snapshot.next if node in self.spec.gates]
        return pending[0] if pending else None

    def history(self, thread_id: str) -> list[StateSnapshot]:
        return list(self.graph.get_state_history(config_for(thread_id)))

    def digest_refusal(self, thread_id: str, current: str, expected: str) -> SignoffError:
        """Why `expected` is not accepted for the content now at the gate (digest `current`):
        it changed since, if the thread waited at a gate with that digest before (one read of
        its history, only on this path); otherwise there is no such digest, and nobody is told
        the content changed when nothing did."""
        seen = set()
        for snapshot in self.history(thread_id):
            if self.gate_of(snapshot):
                try:
                    seen.add(content_digest(self.spec.review_content(snapshot.values)))
                except (KeyError, TypeError, ValueError):  # a gate visit of an older shape: no digest to match
                    continue
        if expected in seen:
            return DigestMismatch(f"the content changed since you reviewed it (digest {current}, you expected {expected}): "
                                  f"run `signoff show {thread_id}` again")
        named = f" {expected!r}" if re.fullmatch(r"[0-9a-f]{1,64}", expected) else ""  # never echo other text back
        return UnknownDigest(f"no such digest{named} for thread {thread_id}: run `signoff show {thread_id}` "
                             "to review its content and the digest shown with it")

    # --- running -------------------------------------------------------------------------

    def start(self, thread_id: str, text: str, options: dict[str, Any], sink: EventSink, control: RunControl | None = None) -> Stop:
        graph_input = self.spec.make_input(text, options)
        hours = float(options.get("deadline_hours") or self.spec.deadline_hours)
        from runtime.versions import fingerprint  # the version it starts on, for `signoff graphs check`

        requester = options.get("actor", "cli")
        threads.register(self.pool, thread_id, self.spec.name, summary=text, graph_input=graph_input, deadline_hours=hours,
                         requested_by=requester, graph_version=fingerprint(self.graph))
        record_event(self.pool, thread_id, requester, "thread_started", {"graph": self.spec.name})
        # register wrote it 'running': no second write (a commit) for it, for this run only
        was, self.marked_running = self.marked_running, True
        try:
            return self._run(thread_id, graph_input, sink, control)
        finally:
            self.marked_running = was

    def resume(self, thread_id: str, sink: EventSink, control: RunControl | None = None) -> Stop:
        """Continue from the last checkpoint: after a decision, a crash, or an interrupt."""
        snapshot = self.snapshot(thread_id)
        if snapshot.values and not snapshot.tasks:
            # Finished: nothing to do, nothing re-done. (Not `not snapshot.next`: a step whose
            # tasks all saved their writes before the process died has no `next` either, yet
            # the graph goes on from there.)
            return self.settle(thread_id)
        gate = self.gate_of(snapshot)
        if gate is not None and not snapshot.values.get("decision"):
            row = self.thread_row(thread_id)
            if row is not None and row.status != "waiting" and decision_for(self.pool, thread_id, self._checkpoint_id(snapshot)) is None:
                # The run reached its gate and died before saying so: it waits for a person now.
                with self._claim(thread_id):
                    return self.settle(thread_id)
            self._apply_recorded_decision(thread_id, gate, snapshot)
        graph_input = None
        if not snapshot.values:  # killed before the first checkpoint: start over from the input
            row = self.thread_row(thread_id)
            graph_input = row.input if row else None
        return self._run(thread_id, graph_input, sink, control)

    def _apply_recorded_decision(self, thread_id: str, gate: str, snapshot: StateSnapshot) -> None:
        """A decision recorded by a process that died before writing it into the thread."""
        recorded = decision_for(self.pool, thread_id, self._checkpoint_id(snapshot))
        if recorded is None:
            raise AwaitingDecision(f"thread {thread_id} is waiting at gate {gate}: approve or reject it (signoff show {thread_id})")
        self.graph.update_state(config_for(thread_id), {"decision": as_state_decision(gate, recorded, recorded.note, handover=recorded.handover)})

    @staticmethod
    def _checkpoint_id(snapshot: StateSnapshot) -> str:
        return str(snapshot.config["configurable"]["checkpoint_id"])

    def _claim(self, thread_id: str) -> Any:
        """The claim a run holds (a worker takes it on its shared session instead)."""
        return threads.claimed(self.pool, thread_id)

    @contextmanager
    def _writing_through(self, claim: Any) -> Iterator[None]:
        """Save the run's checkpoints through the session that holds its claim.

        Fencing by construction, and one round trip less per step: a run whose claim session
        ended (the database restarted) cannot save another step, because that session is the
        only one its checkpointer writes through; no check between steps is needed (durability
        "sync": a step's checkpoint is saved before the next step starts, so a failed save
        stops the run there). A worker's runs share one claim session, so theirs are fenced by
        the tag on their pool sessions instead (migration 008, WorkerRunner)."""
        saver = self.graph.checkpointer
        conn = getattr(claim, "conn", None)
        if conn is None or not hasattr(saver, "conn"):
            yield
            return
        pooled = saver.conn
        saver.conn = conn
        try:
            yield
        finally:
            saver.conn = pooled

    def _run(self, thread_id: str, graph_input: dict[str, Any] | None, sink: EventSink, control: RunControl | None) -> Stop:
        """Run under the thread's claim; every event is shown (`sink`) and persisted for
        watchers in any shell, and an inline run records its own stop as the last one."""
        own = self.progress is None
        writer = EventWriter(self.pool) if own else self.progress
        assert writer is not None

        def show(event: Event) -> None:
            writer.append(thread_id, {**event, "ts": round(time.time(), 4)})
            _deliver(sink, event)

        stop: Stop | None = None
        try:
            stop = self._run_claimed(thread_id, graph_input, show, control)
            return stop
        except Exception as exc:
            if own:  # a worker records its job's failure itself
                show({"event": "stop", "status": "failed", "graph": self.spec.name, "error": f"{exc.__class__.__name__}: {exc}"[:300]})
            raise
        finally:
            if own:
                if stop is not None:
                    writer.append(thread_id, stop_event(stop))
                writer.close()

    def _run_claimed(self, thread_id: str, graph_input: dict[str, Any] | None, sink: EventSink, control: RunControl | None) -> Stop:
        assert self.context is not None, "running a graph needs a SignoffContext"
        started: dict[str, float] = {}
        numbers: dict[str, int] = {}
        observer = UNOBSERVED

        def handle(event: Event) -> None:
            if event["event"] in ("retry", "fallback"):
                record_event(self.pool, thread_id, "signoff", event["event"], {k: v for k, v in event.items() if k != "event"})
            observer.event(event)
            sink(event)

        with self._claim(thread_id) as claim, self._writing_through(claim), observing_run(self.pool, thread_id, self.spec.name) as observer:
            if not self.marked_running:
                threads.set_status(self.pool, thread_id, "running")
            try:
                for mode, payload in self._stream(
                    graph_input, **observer.options(self._stream_options(thread_id, handle)),
                    durability="sync",  # every step is saved before the next starts
                    control=control,
                ):
                    for event in _events(mode, payload, started, numbers):
                        handle(event)
                return observer.stopped(self.settle(thread_id))
            except GraphDrained as drained:
                threads.set_status(self.pool, thread_id, "interrupted")
                record_event(self.pool, thread_id, "signoff", "run_interrupted", {"reason": drained.reason})
                return Stop(thread_id, self.spec.name, "interrupted", error=drained.reason, values=dict(self.snapshot(thread_id).values))
            except Exception as exc:
                if not is_connection_error(exc):
                    # Never left `running` with no process behind it: failed threads are what
                    # `resume` and `recover` pick up.
                    threads.set_status(self.pool, thread_id, "failed")
                    record_event(self.pool, thread_id, "signoff", "run_failed", {"error": f"{exc.__class__.__name__}: {exc}"[:500]})
                raise

    def _stream(self, graph_input: Any, **options: Any) -> Iterator[Any]:
        """The run's stream of (mode, payload) (runtime/runner.py runs async graphs here)."""
        return self.graph.stream(graph_input, **options)

    def _stream_options(self, thread_id: str, handle: EventSink) -> dict[str, Any]:
        """How the run streams its events: LangGraph's `tasks`, `messages` and `custom` modes.

        With `direct_events` (a worker's runs), only `tasks` is streamed: the nodes' own events
        reach `handle` through the run's context (SignoffContext.emit) and tokens through a
        callback on the run (`_token_handler`), in the node's thread. Same
        events, but a step with one task then runs in the run's own thread: with `messages` or
        `custom` streamed, LangGraph runs every task on a pool thread and keeps a second
        waiting for stream events, two thread hand-offs per step and more per event, which cost
        a worker running 100 threads a tenth of its CPU (measured)."""
        if self.direct_events:
            tokens = _token_handler(handle)
            if tokens is not None:
                config = {**config_for(thread_id), "callbacks": [tokens]}
                return {"config": config, "context": replace(self.context, emit=handle), "stream_mode": ["tasks"]}
        return {"config": config_for(thread_id), "context": self.context, "stream_mode": ["tasks", "messages", "custom"]}

    def settle(self, thread_id: str) -> Stop:
        """Read where the thread stands and mirror it into the threads table."""
        snapshot = self.snapshot(thread_id)
        values = dict(snapshot.values)
        gate = self.gate_of(snapshot)
        summary = self.spec.summarize(values)
        if gate is not None:
            review = self.spec.review_content(values)
            digest = content_digest(review)
            from checkpoint.approval_chain import on_wait  # which stage of an approval chain it waits for

            chain = on_wait(self.pool, self.spec, thread_id, gate, self._checkpoint_id(snapshot), digest, values)
            now = self.context.clock() if self.context else datetime.now(timezone.utc)
            hours = None  # the thread's own deadline_hours, unless its chain's waiting stage has one, stage 1 too
            if chain is not None and chain.current is not None and chain.current.stage.deadline_hours:
                hours = chain.current.stage.deadline_hours
            # What a listing shows (digest, content under review) is stored with the stop, so
            # `pending` and `show` need no checkpoint load or graph import. The
            # deadline stays if it already waited here (threads.mark_waiting).
            deadline = threads.mark_waiting(self.pool, thread_id, gate=gate, summary=summary, digest=digest, review=review,
                                            now=now, hours=hours, clear_approval_wait=chain is None)
            if deadline is None:  # no thread row (a graph run outside Signoff's records): what it would have been
                deadline = now + timedelta(hours=hours or self.spec.deadline_hours)
            from checkpoint.notifications import queue_for_gate  # one per gate visit and channel; never raises

            queue_for_gate(self.pool, thread_id=thread_id, graph=self.spec.name, gate=gate, visit=self._checkpoint_id(snapshot),
                           summary=summary, digest=digest, deadline=deadline, now=now)
            return Stop(thread_id, self.spec.name, "waiting", gate=gate, digest=digest, values=values)
        if snapshot.tasks:  # work left (tasks to run, or done but not yet checkpointed)
            threads.set_status(self.pool, thread_id, "failed", summary=summary)
            return Stop(thread_id, self.spec.name, "failed", error=f"stopped before {', '.join(t.name for t in snapshot.tasks)}", values=values)
        threads.set_status(self.pool, thread_id, "finished", summary=summary)
        return Stop(thread_id, self.spec.name, "finished", outcome=self.spec.outcome(values), values=values)

    # --- signing off ---------------------------------------------------------------------

    def decide(self, thread_id: str, verdict: Verdict, *, actor: str, note: str = "", expect_digest: str | None = None,
               handover: bool = False, token_id: int | None = None) -> Any:
        """Record one decision for the gate the thread waits at and write it into the thread.
        `token_id`: the reviewer token the decision came through (None: an OS login, or Signoff).

        `handover`: a rejection that gives the thread to a specialist rather than asking for a
        redraft (GraphSpec.hands_over); it is recorded as a rejection whose note says so.

        Deciders of one thread are serialised by its row lock; the unique key on
        (thread, checkpoint) is the second line of defence. A decider whose view went stale
        while it waited for the lock is told who decided first.
        """
        if handover:
            if verdict != "rejected":
                raise ValueError("only a rejection hands a thread over")
            if not self.spec.hands_over:
                raise InvalidInput(f"a {self.spec.name} thread cannot be handed over to a specialist: "
                                   "reject it with --feedback (what to change) instead")
            note = handover_note(note)
        # Everything that needs the checkpoint is read before the row lock: under it only this
        # thread's rows are read and written, on the lock's own connection (HeldConnection), so
        # a decider never holds one pooled connection while waiting for another (with as many
        # deciders as connections, none would get its second: the pool deadlocked).
        seen = self.snapshot(thread_id)
        seen_id = str(seen.config["configurable"]["checkpoint_id"]) if seen.config else None
        gate = self.gate_of(seen)
        at_gate = gate is not None and not seen.values.get("decision")
        digest = content_digest(self.spec.review_content(seen.values)) if at_gate else ""
        if at_gate and expect_digest is not None and expect_digest != digest:
            self._refuse_stale(thread_id, seen_id, gate)  # decided meanwhile: say by whom, not "changed"
            raise self.digest_refusal(thread_id, digest, expect_digest)
        amount = self.spec.action_amount(seen.values) if at_gate else None
        now = self.context.clock() if self.context else datetime.now(timezone.utc)
        with threads.locked(self.pool, thread_id) as locked:
            held = HeldConnection(locked)
            if not at_gate or latest_checkpoint_id(locked, thread_id) != seen_id or decision_for(held, thread_id, str(seen_id)) is not None:
                self._refuse_stale(thread_id, seen_id, gate, held)
                raise NotAtGate(f"thread {thread_id} is not waiting at a gate: see `signoff show {thread_id}`")
            assert gate is not None and seen_id is not None
            detail = None
            if amount is not None and verdict == "expired":
                # The waiting stage's deadline passed: that ends the chain like a rejection, and
                # the decision's audit row says which stage let it pass.
                from checkpoint.approval_chain import describe

                chain = describe(held, self.spec, thread_id, seen_id, digest, dict(seen.values), gate)
                stage = chain.current if chain is not None else None
                if stage is not None:
                    detail = {"stage": stage.index, "of": len(chain.stages), "role": stage.stage.role,  # type: ignore[union-attr]
                              "approved_by": list(stage.approvers)}
            elif amount is not None:  # an action with money behind it: its approval chain first
                from checkpoint.approval_chain import decide_stage

                row = threads.get(held, thread_id)  # type: ignore[arg-type]
                progress = decide_stage(
                    held, locked, graph=self.spec.name, gate=gate, thread_id=thread_id, checkpoint_id=seen_id, digest=digest,
                    amount_cents=amount, verdict=verdict, actor=actor, note=note, now=now,
                    default_deadline_hours=row.deadline_hours if row else self.spec.deadline_hours,
                    currency=self.spec.action_currency(seen.values), token_id=token_id)
                if progress is not None:
                    decided(self, thread_id, gate, "stage_approved", actor)
                    return progress  # a stage approved; the thread waits for the next one
            if token_id is not None:
                detail = {**(detail or {}), "token": token_id}
            recorded = record_decision(
                held, thread_id=thread_id, gate=gate, checkpoint_id=seen_id,  # type: ignore[arg-type]
                verdict=verdict, actor=actor, note=note, digest=digest, detail=detail, handover=handover,
            )
        # Recorded (committed with the lock's transaction): now written into the thread. A process
        # that dies in between leaves a recorded decision that `resume` applies.
        self.graph.update_state(config_for(thread_id), {"decision": as_state_decision(gate, recorded, note, handover=handover)})
        decided(self, thread_id, gate, "handed_over" if handover else verdict, actor)
        return None

    def _refuse_stale(self, thread_id: str, seen_id: str | None, gate: str | None, held: Any = None) -> None:
        """AlreadyDecided naming who decided, if the gate visit this decider saw was decided (or
        the thread moved on since): a decider whose view went stale is told who came first."""
        source = held or self.pool
        recorded = decision_for(source, thread_id, seen_id) if seen_id else None
        if recorded is not None:
            raise AlreadyDecided(recorded.actor, recorded.decided_at, recorded.verdict)
        if held is not None:
            latest = decisions.latest_decision(source, thread_id)
            if latest is not None and (gate is not None or latest_checkpoint_id(held.conn, thread_id) != seen_id):
                raise AlreadyDecided(latest["actor"], latest["decided_at"], latest["decision"])

    def latest_decision(self, thread_id: str) -> dict[str, Any] | None:
        return decisions.latest_decision(self.pool, thread_id)

    def thread_row(self, thread_id: str) -> threads.ThreadRow | None:
        """The row this operation read (for_thread), or a read now for another thread."""
        if self.row is not None and self.row.thread_id == thread_id:
            return self.row
        return threads.get(self.pool, thread_id)


def latest_checkpoint_id(conn: Any, thread_id: str) -> str | None:
    """The id of the thread's newest checkpoint, read on `conn` (the one holding the thread's
    row lock), to tell whether the state a decider saw is still current. The id alone, as
    LangGraph's saver picks its latest (the greatest id of the root namespace): loading the
    whole checkpoint to compare its id cost every decision a second deserialised state."""
    row = conn.execute("SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
                       "ORDER BY checkpoint_id DESC LIMIT 1", (thread_id,)).fetchone()
    if row is None:
        return None
    return str(row["checkpoint_id"] if isinstance(row, dict) else row[0])


def _token_handler(emit: EventSink) -> Any:
    """A callback that turns the tokens of a streamed model call into `token` events, as
    `stream_mode="messages"` does for a graph whose state holds no messages (Signoff's hold
    none): tokens of calls tagged nostream, and of nested graphs, are left out, as the stream
    leaves them out. It listens to chat models only (`ignore_chain`...): LangGraph's own
    handler also inspects every node's input and output for messages, a cost each of a
    worker's runs paid for nothing. None if LangChain moved what it is built on."""
    handler_class = _token_handler_class()
    return handler_class(emit) if handler_class is not None else None


@functools.cache
def _token_handler_class() -> Any:
    """The handler's class, defined once per process (a worker makes one handler per run)."""
    try:
        from langchain_core.callbacks import BaseCallbackHandler
        from langchain_core.outputs import ChatGenerationChunk
        from langchain_core.tracers._streaming import _StreamingCallbackHandler
        from langgraph.constants import TAG_NOSTREAM
    except ImportError:
        return None

    class Tokens(BaseCallbackHandler, _StreamingCallbackHandler):  # the mixin makes LangChain stream the call
        run_inline = True
        ignore_chain = ignore_agent = ignore_retriever = ignore_retry = ignore_custom_event = True

        def __init__(self, emit: EventSink) -> None:
            self.emit = emit
            self.nodes: dict[Any, str] = {}

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, tags: list[str] | None = None,
                                metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if metadata and TAG_NOSTREAM not in (tags or ()) and "|" not in str(metadata.get("langgraph_checkpoint_ns", "")):
                self.nodes[run_id] = metadata.get("langgraph_node", "?")

        def on_llm_new_token(self, token: str, *, chunk: Any = None, run_id: Any, **kwargs: Any) -> None:
            node = self.nodes.get(run_id)
            if node is not None and isinstance(chunk, ChatGenerationChunk):
                content = chunk.message.content
                if isinstance(content, str) and content:
                    self.emit({"event": "token", "node": node, "text": content})

        def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
            self.nodes.pop(run_id, None)

        def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
            self.nodes.pop(run_id, None)

        def tap_output_iter(self, run_id: Any, output: Any) -> Any:
            return output

        def tap_output_aiter(self, run_id: Any, output: Any) -> Any:
            return output

    return Tokens


def _deliver(sink: EventSink, event: Event) -> None:
    """Show an event; a display that fails (a closed pipe, a broken terminal) never stops the
    run it only reports on."""
    try:
        sink(event)
    except Exception:  # noqa: BLE001 - progress is best effort, the checkpoint is the record
        pass


def _events(mode: str, payload: Any, started: dict[str, float], numbers: dict[str, int] | None = None) -> list[Event]:
    """LangGraph stream chunks -> the few events a person watching a run cares about;
    `numbers`: the run's streamed messages, numbered (runtime/message_chunks.py)."""
    if mode == "tasks":
        task_id, node = payload["id"], payload["name"]
        if "result" not in payload and "error" not in payload:
            started[task_id] = time.monotonic()
            return [{"event": "node_start", "node": node, "id": task_id}]
        duration = time.monotonic() - started.pop(task_id, time.monotonic())
        result = payload.get("result") or {}
        calls = result.get("calls", []) if isinstance(result, dict) else []
        error = payload.get("error")
        return [{
            "event": "node_end", "node": node, "id": task_id, "duration": duration, "calls": calls,
            "error": str(error) if error else (result.get("error") if isinstance(result, dict) else None),
            "update": result if isinstance(result, dict) else {},
        }]
    if mode == "messages":
        chunk, metadata = payload
        if isinstance(chunk, AIMessageChunk):  # streamed by the model: LangGraph's API sends it as it comes
            event = chunk_event(chunk, metadata, numbers if numbers is not None else {})
            return [event] if event is not None else []
        text = chunk.content if isinstance(chunk.content, str) else ""
        return [{"event": "token", "node": metadata.get("langgraph_node", "?"), "text": text}] if text else []
    if mode == "custom" and isinstance(payload, dict) and "event" in payload:
        return [payload]
    if mode == "custom":  # a graph's own get_stream_writer() data: LangGraph's API streams it (`custom`)
        return [{"event": "custom", "data": payload}]
    return []


def stop_event(stop: Stop) -> Event:
    """The last event of a run, as `watch` and a following `approve` show it."""
    return {
        "event": "stop", "status": stop.status, "graph": stop.graph, "gate": stop.gate, "outcome": stop.outcome,
        "error": stop.error, "digest": stop.digest,
        "needs_human": bool(stop.values.get("needs_human")), "state_error": stop.values.get("error"),
    }


def stop_from_event(thread_id: str, event: Event) -> Stop:
    values = {"needs_human": event.get("needs_human"), "error": event.get("state_error")}
    return Stop(thread_id, event.get("graph", ""), event["status"], gate=event.get("gate"), outcome=event.get("outcome") or "",
                error=event.get("error"), digest=event.get("digest"), values=values)


EXPIRY_ACTOR = "signoff (deadline)"


def expire_if_due(runner: ThreadRunner, thread_id: str, now: datetime, sink: EventSink) -> Stop | None:
    """Apply the gate's default action if its deadline passed; the Stop it led to, else None."""
    row = runner.thread_row(thread_id)
    if row is None or row.status != "waiting" or row.deadline is None or row.deadline > now:
        return None
    try:
        runner.decide(thread_id, "expired", actor=EXPIRY_ACTOR, note=f"deadline {row.deadline:%Y-%m-%d %H:%M %Z} passed")
    except (AlreadyDecided, NotAtGate):
        return None  # someone decided first; their decision stands
    return runner.resume(thread_id, sink)


def expire_due(pool: ConnectionPool, context: SignoffContext, sink: EventSink,
               on_error: Callable[[str, Exception], None] | None = None) -> list[Stop]:
    """Every waiting thread past its deadline gets its gate's default action. With `on_error`,
    a thread that fails is reported to it and the others still expire (a lost database still
    stops the lot)."""
    now = context.clock()
    stops = []
    for row in threads.list_by_status(pool, "waiting"):
        if row.deadline is None or row.deadline > now:
            continue
        try:
            stop = expire_if_due(ThreadRunner.for_thread(pool, row.thread_id, context), row.thread_id, now, sink)
        except Exception as exc:
            if on_error is None or is_connection_error(exc):
                raise
            on_error(row.thread_id, exc)
            continue
        if stop is not None:
            stops.append(stop)
    return stops


def abandoned_threads(pool: ConnectionPool) -> list[str]:
    """Threads whose run died mid-way, claimed by no live process: not finished and not at a
    gate, or at a gate whose decision was recorded by a process that died before running on it."""
    candidates = threads.list_by_status(pool, "running", "failed", "interrupted") + threads.list_decided_waiting(pool)
    return [row.thread_id for row in candidates if not threads.is_claimed(pool, row.thread_id)]
