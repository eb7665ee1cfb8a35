"""`signoff worker`: runs threads from the job queue, many at once, until told to stop.

One process, one loop (this thread) that heartbeats, reaps dead workers, turns due deadlines
and abandoned runs into jobs, and claims jobs while it has free slots; each claimed job runs
in a pool of `concurrency` threads. New work wakes the loop through LISTEN/NOTIFY; a poll
every second is the backstop.

Why threads and not an asyncio run with AsyncPostgresSaver (measured, see docs/benchmarks.md
"Workers"): the nodes are synchronous (psycopg pool, ChatOpenAI.invoke, file writes), so
under `astream` LangGraph would run every node body in an executor thread anyway, and the
async route needs an async copy of resume/settle/decide beside the sync one the CLI uses:
two copies that drift (procrastinate's own lesson). Nor would it be cheaper: stock LangGraph
on the support path's shape, async nodes with AsyncPostgresSaver and ChatOpenAI.ainvoke
against threads with PostgresSaver and invoke, costs the same CPU per thread
(tests/benchmarks/floor_bench.py). A thread per running thread costs a
stack, not a process: 100 at once fit in one worker well under 1 GB. What the sync route
gives up is LangGraph's node `timeout=` (async nodes only); a stalled model call is still
cut by the HTTP client's own timeout (SIGNOFF_CALL_TIMEOUT), which really closes the socket.

Every run goes through the same ThreadRunner.resume as `signoff resume`, so the worker does
exactly what a person would: run a queued thread, apply a recorded decision, expire a gate
(`expire_if_due`), or continue a dead run from its last checkpoint.

Drain (SIGTERM/Ctrl-C once): no new claims; each running thread stops at its next step
boundary (RunControl), its job goes back to the queue, the worker's row is removed. A second
signal exits at once: the claims die with the session, and the next worker to reap (or this
one restarted) hands the jobs out again. Nothing is lost either way: the checkpoint holds
every finished step.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
from langgraph.runtime import RunControl
from psycopg_pool import ConnectionPool

from checkpoint import events as progress
from checkpoint import jobs
from checkpoint import workers as registry
from checkpoint.database import connection_headroom, ensure_reachable, is_connection_error, make_saver, open_pool
from checkpoint.threads import _RUN_LOCK_CLASS, ThreadBusy
from checkpoint.workers import LockSession, SessionClaim
from graphs.registry import GraphSpec
from runtime.thread_runner import AwaitingDecision, NotAtGate, Stop, ThreadRunner, expire_if_due, stop_event
from nodes.context import SignoffContext
from nodes.gates import AlreadyDecided
from observability.hooks import jobs_claimed

#: `log(line, event=..., thread_id=..., **fields)`: the fields are for structured logs (observability/logs.py)
Log = Callable[..., None]


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 10
    #: seconds between polls of the queue when no notification arrives
    poll: float = 1.0
    heartbeat: float = registry.HEARTBEAT_SECONDS
    stale_after: float = registry.STALE_AFTER_SECONDS
    #: seconds between sweeps (dead workers, due deadlines, abandoned runs)
    sweep: float = 1.0
    #: database connections for the runs (besides the claim session and the listener)
    pool_size: int = 0
    #: prune threads finished this many days ago as the worker goes (SIGNOFF_PRUNE_AFTER_DAYS);
    #: None: never. At most `prune_limit` threads every `prune_every` seconds, in a side thread.
    prune_after_days: float | None = None
    prune_every: float = 60.0
    prune_limit: int = 100

    def connections(self) -> int:
        """Up to 36: runs hold a connection only while a statement runs, yet 100 runs queued
        on 20 connections spent a tenth of the worker's CPU waking each other in the pool's
        queue (measured; 40 and 64 cost the same CPU, 20 about 8% more), and two
        workers at 38 connections each stay within PostgreSQL's default 100."""
        return self.pool_size or min(self.concurrency, 32) + 4


def headroom_warning(usable: int, in_use: int, *, need: int) -> str | None:
    """One line when this worker's pool could not grow to `need` connections: PostgreSQL
    refuses connections past max_connections, and runs would wait for one, then fail. Said at
    start, where the fix is one flag, not mid-run as a pool timeout."""
    free = usable - in_use
    if free >= need:
        return None
    return (f"warning: this worker may open {need} connections and PostgreSQL lets {max(free, 0)} more in "
            f"({in_use} of {usable} in use): lower --concurrency (a worker opens up to min(N, 32) + 4), "
            "raise PostgreSQL's max_connections, or put PgBouncer in front")


class WorkerRunner(ThreadRunner):
    """ThreadRunner whose runs hold their thread's claim on the worker's shared lock session,
    taken with the job (LockSession.take, `held`) and given back when the job closes, and
    share the worker's compiled graph (compiled once per graph, not per job), with their
    events handed over directly rather than streamed (ThreadRunner._stream_options)."""

    direct_events = True

    def __init__(self, pool: ConnectionPool, spec: GraphSpec, context: SignoffContext, graph: Any, session: LockSession,
                 progress: progress.EventWriter, held: bool) -> None:
        # Not super().__init__: that compiles the graph again.
        self.pool, self.spec, self.context, self.graph, self.session = pool, spec, context, graph, session
        self.progress, self.held = progress, held

    @contextmanager
    def _claim(self, thread_id: str) -> Iterator[SessionClaim]:
        """The claim the worker took with the job; ThreadBusy if another process holds it.
        Not released here: the worker gives it back as the job closes (Worker._execute)."""
        if not self.held:
            raise ThreadBusy(f"thread {thread_id} is running in another process")
        yield SessionClaim(self.session, thread_id)

    def thread_row(self, thread_id: str) -> Any:
        """The thread's row, read once per job (as `for_thread` reads it once per command):
        a job's version check, run options, recovery and settling each asked for it again."""
        if self.row is None or self.row.thread_id != thread_id:
            from checkpoint.threads import get

            self.row = get(self.pool, thread_id)
        return self.row

    def give_back(self, thread_id: str) -> None:
        """Release the claim taken with the job, if it was taken (before the job closes or goes
        back to the queue, so the thread's next claim finds it free)."""
        if self.held:
            self.session.release([thread_id])

    @contextmanager
    def _writing_through(self, claim: Any) -> Iterator[None]:
        """Through the worker's pool, whose sessions are fenced by the claim session's tag
        (migration 008): one claim session serves every run of the worker, so it cannot also
        carry their writes without serialising them all."""
        yield


class CompiledGraphs:
    """Each graph compiled once per worker, shared by all its runs (a compiled graph is safe to
    stream from many threads at once).

    Why one for all, when it used to be one per run thread: PostgresSaver holds one lock
    around every checkpoint read and write of an instance, which serialised every run of the
    worker on one saver (measured: the bottleneck at --concurrency 100), so each run thread
    compiled its own graphs, and compiling them cost the worker about 7% of its CPU over 500
    threads. `make_saver`'s saver takes no lock on a pool, so a single graph does."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._compiled: dict[str, Any] = {}
        self._mutex = threading.Lock()

    def get(self, name: str) -> Any:
        with self._mutex:
            if name not in self._compiled:
                from graphs.registry import GRAPHS
                from runtime.registry import get_entry
                from runtime.runs import bind

                if name in GRAPHS:
                    spec = GRAPHS[name]
                    self._compiled[name] = spec.build().compile(checkpointer=make_saver(self.pool), interrupt_before=list(spec.gates))
                else:  # a project's graph (langgraph.json), bound to Signoff's checkpointer and store
                    self._compiled[name] = bind(get_entry(name), self.pool)
            return self._compiled[name]


def share_step_executor(max_workers: int) -> None:
    """Let every graph run in this process use one thread pool for its background work.

    LangGraph runs a step's checkpoint and write saves (and parallel nodes) on a thread pool
    it makes per `stream()` call (langchain's `get_executor_for_config`), so every run starts
    and joins threads of its own. Python's ThreadPoolExecutor starts them while holding a
    lock global to the process (`_global_shutdown_lock`), so a worker's 100 concurrent runs
    queued behind each other's thread starts: measured 13% of the worker's CPU over 500
    threads. One pool shared by all runs keeps its threads. Each run still waits
    for exactly its own tasks (LangGraph's BackgroundExecutor tracks them), and a run that
    sets `max_concurrency` keeps a pool of its own. The pool's bound is generous because a
    run's task may start a subgraph whose tasks need threads of the same pool. Installed by
    the worker only; if LangGraph moves that hook, runs simply keep their own pools."""
    try:
        import langgraph.pregel._executor as step_executor
        from langchain_core.runnables.config import ContextThreadPoolExecutor
    except ImportError:
        return
    own = getattr(step_executor, "get_executor_for_config", None)
    if own is None or getattr(own, "_signoff_shared", False):
        return
    shared = StepExecutor(ContextThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="signoff-step"))

    @contextmanager
    def executor_for(config: Any) -> Iterator[Any]:
        if (config or {}).get("max_concurrency") is not None:
            with own(config) as executor:
                yield executor
        else:
            yield shared

    executor_for._signoff_shared = True  # type: ignore[attr-defined]
    step_executor.get_executor_for_config = executor_for


class StepExecutor:
    """The worker's one pool for LangGraph's background work, except checkpoint saves, which
    run right away in the thread that asks for them.

    With durability="sync" a run waits for each step's checkpoint anyway (and LangGraph waits
    for a task's writes before the step's checkpoint), so handing the save to a pool thread
    only adds two thread hand-offs per save: the pool thread wakes, the run wakes again, each
    time fighting 100 runs for the GIL. Measured: about a tenth of the worker's CPU.
    Saved in the asking thread, a step's writes and its checkpoint are in PostgreSQL before
    LangGraph goes on, in the order LangGraph asks for them, as before; an error is kept in
    the returned future and raised where LangGraph reads it, as before. Everything else (a
    step's parallel tasks, stream waiters, cache writes) goes to the shared pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        # LangGraph's BackgroundExecutor submits `context.run, target, *args`.
        target = args[0] if args and getattr(fn, "__name__", "") == "run" else None
        if target is None or not _is_checkpoint_save(target):
            return self.pool.submit(fn, *args, **kwargs)
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to LangGraph through the future, as a pool would
            future.set_exception(exc)
        return future


def _is_checkpoint_save(target: Any) -> bool:
    """A checkpointer's `put_writes`, or LangGraph's `_checkpointer_put_after_previous` (which
    waits for the previous save, already done when every save runs inline, then calls `put`)."""
    from langgraph.checkpoint.base import BaseCheckpointSaver

    owner = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(owner, BaseCheckpointSaver):
        return name in ("put_writes", "put")
    return name == "_checkpointer_put_after_previous" and isinstance(getattr(owner, "checkpointer", None), BaseCheckpointSaver)


class Worker:
    """One worker process's loop. `run()` blocks until `request_stop()` (drain) is done."""

    def __init__(self, url: str, make_context: Callable[[ConnectionPool], SignoffContext], options: WorkerOptions = WorkerOptions(), *, log: Log = lambda line, **fields: None) -> None:
        self.url, self.make_context, self.options, self.log = url, make_context, options, log
        self.worker_id: int | None = None
        self.done = 0
        #: completed sweeps and prunes (tests wait on them instead of sleeping)
        self.sweeps = 0
        self.prunes = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running: dict[Future[None], tuple[jobs.Job, RunControl]] = {}
        self._mutex = threading.Lock()
        self.ready = threading.Event()
        self.pool: ConnectionPool | None = None

    # --- control (any thread, signal handlers included) -------------------------------------

    def request_stop(self, reason: str = "shutdown") -> None:
        """Drain: claim nothing more, stop running threads at their next step boundary."""
        self._stop_reason = reason
        self._stopping.set()
        with self._mutex:
            for _, control in self._running.values():
                control.request_drain(reason)
        self._wake.set()

    @property
    def running(self) -> int:
        with self._mutex:
            return len(self._running)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until drained; the exit code (0, or 5 when the database went away)."""
        from checkpoint.migrations import migrate

        opts = self.options
        # The claim session first: the pool's sessions carry its tag, so PostgreSQL refuses
        # their writes once it is gone (migration 008: fencing a worker taken over).
        ensure_reachable(self.url)  # a friendly error, not the claim session's raw one
        session = LockSession(self.url)
        try:
            pool = self.pool = open_pool(self.url, max_size=opts.connections(), application_name=session.fence_tag)
        except BaseException:
            session.close()
            raise
        listener = writer = executor = None
        try:
            migrate(pool)
            if warning := headroom_warning(*connection_headroom(pool), need=opts.connections()):
                self.log(warning)
            context = self.make_context(pool)
            self.worker_id = registry.register(pool, host=socket.gethostname(), pid=os.getpid(), session=session, concurrency=opts.concurrency)
            worker_id = self.worker_id

            def closed(done: list[tuple[int, str, str | None]]) -> None:
                """Jobs whose stops are written: their claims go back first, then the jobs
                close, so the next job of a thread (claimable once this one is closed) finds
                its claim free wherever it is claimed."""
                session.release([tid for _, _, tid in done if tid is not None])
                self._close(lambda: jobs.finish_all(pool, [(job_id, result) for job_id, result, _ in done], worker_id=worker_id))

            writer = progress.EventWriter(pool, on_written=closed)
            graphs = CompiledGraphs(pool)
            executor = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="signoff-run")
            share_step_executor(max(64, 8 * opts.concurrency))
            listener = threading.Thread(target=self._listen, name="signoff-listen", daemon=True)
            listener.start()
            self._start_notifier(pool, context)
            if opts.prune_after_days is not None:
                threading.Thread(target=self._prune, args=(pool,), name="signoff-prune", daemon=True).start()
            self.log(f"worker {self.worker_id} started on {socket.gethostname()} pid {os.getpid()}, concurrency {opts.concurrency}",
                     event="worker_started", worker=self.worker_id)
            self.ready.set()
            return self._serve(pool, context, session, writer, graphs, executor)
        finally:
            self._stopping.set()
            if executor is not None:
                executor.shutdown(wait=True)
            if writer is not None:
                writer.close()
            if self.worker_id is not None:
                try:
                    registry.unregister(pool, self.worker_id)
                except psycopg.Error:
                    pass  # the database is gone; the next worker reaps this one
            session.close()
            pool.close()
            self.ready.set()

    def _prune(self, pool: ConnectionPool) -> None:
        """Automatic retention: what `signoff db prune --finished-older-than DAYS`
        does, a bounded batch at a time, so storage stays bounded with nobody running it.
        Safe beside runs (finished threads only); several workers pruning at once skip what
        another is pruning."""
        from datetime import timedelta

        from checkpoint.retention import prune_finished

        opts = self.options
        assert opts.prune_after_days is not None
        while not self._stopping.wait(opts.prune_every):
            try:
                report = prune_finished(pool, older_than=timedelta(days=opts.prune_after_days), limit=opts.prune_limit)
            except psycopg.Error as exc:
                self.log(f"prune skipped: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}")
                continue
            self.prunes += 1
            if report.threads:
                self.log(f"pruned {report.threads} finished threads: {report.bytes / 1e6:.2f} MB of row data")

    def _start_notifier(self, pool: ConnectionPool, context: SignoffContext) -> None:
        """Deliver the notification outbox in a side thread until the worker stops."""
        from checkpoint.notifications import start_delivery
        from checkpoint.settings import Settings

        try:
            start_delivery(pool, Settings.from_env().home, os.environ, self._stopping, clock=context.clock, log=self.log)
        except Exception as exc:  # noqa: BLE001 - a bad notification setting must not stop the runs
            self.log(f"notifications off: {exc}")

    def _serve(self, pool: ConnectionPool, context: SignoffContext, session: LockSession, writer: progress.EventWriter,
               graphs: "CompiledGraphs", executor: ThreadPoolExecutor) -> int:
        opts = self.options
        assert self.worker_id is not None
        next_beat = next_sweep = 0.0
        while True:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + opts.heartbeat
                try:
                    alive = session.alive() and registry.heartbeat(pool, self.worker_id, running=self.running, done=self.done, draining=self._stopping.is_set())
                except psycopg.Error:
                    alive = False
                if not alive:
                    # The claim session (or our row) is gone: our claims may be someone else's
                    # now. Running threads fail their claim check at the next step; stop.
                    self.log("lost the database session that holds this worker's claims; stopping (restart me)")
                    self.request_stop("claim session lost")
                    self._wait_runs()
                    return 5
            if self._stopping.is_set():
                if not self.running:
                    self.log(f"worker {self.worker_id} drained", event="worker_drained", worker=self.worker_id)
                    return 0
            else:
                if now >= next_sweep:
                    next_sweep = now + opts.sweep
                    self._sweep(pool, context)
                free = opts.concurrency - self.running
                if free > 0:
                    claimed = jobs.claim(pool, self.worker_id, free)
                    jobs_claimed(claimed)
                    held = self._take_claims(pool, session, claimed)
                    for job in claimed if held is not None else ():
                        self._start(job, pool, context, session, writer, graphs, executor, job.thread_id in held)
            self._wake.wait(opts.poll if not self._stopping.is_set() else 0.05)
            self._wake.clear()

    def _sweep(self, pool: ConnectionPool, context: SignoffContext) -> None:
        assert self.worker_id is not None
        try:
            for job in registry.reap(pool, self.worker_id, stale_after=self.options.stale_after):
                self.log(f"{job['thread_id']}: its worker died; job {job['id']} -> {job['status']}")
            jobs.enqueue_due_deadlines(pool, context.clock())
            jobs.enqueue_abandoned(pool, _RUN_LOCK_CLASS)
            from runtime.blocked import retry_loadable

            for thread_id in retry_loadable(pool, self.log):  # set aside for a graph that loads here now
                self.log(f"{thread_id}: its graph loads now; queued again")
        except psycopg.Error as exc:
            self.log(f"sweep skipped: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}")
        self.sweeps += 1

    def _take_claims(self, pool: ConnectionPool, session: LockSession, claimed: list[jobs.Job]) -> set[str] | None:
        """The run claims of a claimed batch's threads (those taken), or None if the claim
        session failed: the jobs then go back to the queue, and the next heartbeat finds out
        whether the session is gone (then the worker stops)."""
        if not claimed:
            return set()
        try:
            return session.take([job.thread_id for job in claimed])
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            for job in claimed:
                self._close(lambda job=job: jobs.release(pool, job.id, f"claim session error: {reason}"[:300], delay_seconds=1.0, worker_id=self.worker_id))
            return None

    def _start(self, job: jobs.Job, pool: ConnectionPool, context: SignoffContext, session: LockSession,
               writer: progress.EventWriter, graphs: "CompiledGraphs", executor: ThreadPoolExecutor, held: bool) -> None:
        control = RunControl()

        def execute() -> None:  # in a run thread, on the graph compiled once for the worker
            from runtime.worker_runs import worker_runner

            try:
                runner = worker_runner(job, pool, context, graphs, session, writer, held)
            except Exception as exc:  # noqa: BLE001 - its graph is unknown here or fails to load
                self._set_aside(job, pool, session, writer, held, exc)
                return
            self._execute(job, runner, control, writer)

        with self._mutex:
            future = executor.submit(execute)
            self._running[future] = (job, control)
        future.add_done_callback(self._finished)

    def _set_aside(self, job: jobs.Job, pool: ConnectionPool, session: LockSession, writer: progress.EventWriter, held: bool,
                   exc: Exception) -> None:
        """A job whose thread's graph cannot be loaded here: the reason goes on the thread
        (pending, show and workers say it), the job closes as failed, the claim goes back, and
        no sweep requeues the thread until a process can load its graph (runtime/blocked.py)."""
        from runtime import blocked

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        try:
            blocked.mark(pool, job.thread_id, reason, fresh=job.fresh_input is not None)
            writer.append(job.thread_id, {"event": "stop", "status": "failed", "graph": job.graph, "error": reason, "job": job.id})
            writer.flush()
        finally:
            if held:
                session.release([job.thread_id])
            self._close(lambda: jobs.finish(pool, job.id, reason, failed=True, worker_id=self.worker_id))
        self.log(f"{job.thread_id}: job {job.id} ({job.kind}) set aside: {reason}")

    def _finished(self, future: Future[None]) -> None:
        with self._mutex:
            self._running.pop(future, None)
            self.done += 1
        self._wake.set()

    def _wait_runs(self) -> None:
        while self.running:
            time.sleep(0.05)

    def _execute(self, job: jobs.Job, runner: WorkerRunner, control: RunControl, writer: progress.EventWriter) -> None:
        """Run one job to its end and close it; never raises (a job's failure is recorded).
        The thread's claim is given back before the job closes or goes back to the queue
        (the next claim of the thread must find it free): by the writer, with the job, or
        here on the other paths."""
        handed_over = False
        try:
            handed_over = self._run_job(job, runner, control, writer)
        finally:
            if not handed_over:  # given back already, unless something unforeseen raised
                runner.give_back(job.thread_id)

    def _run_job(self, job: jobs.Job, runner: WorkerRunner, control: RunControl, writer: progress.EventWriter) -> bool:
        """`_execute`'s work; True if the job (and its claim) went to the writer to close."""
        pool, tid = runner.pool, job.thread_id
        def sink(event: dict[str, Any]) -> None:  # the job's own events; the run's are persisted by the runner
            writer.append(tid, {**event, "ts": round(time.time(), 4)})

        def quiet(event: dict[str, Any]) -> None:
            pass

        sink({"event": "run_started", "job": job.id, "kind": job.kind, "worker": self.worker_id})
        stop: Stop | None = None
        try:
            if job.kind == "deadline":
                stop = expire_if_due(runner, tid, runner.context.clock(), quiet)  # type: ignore[union-attr]
                result = "not due, or decided first" if stop is None else stop.status
            elif job.fresh_input is not None:
                # A thread no process has run yet (the claim moved it from 'queued' to
                # 'running'): straight from its input, what resume would find out from an
                # empty checkpoint, minus the reads.
                runner.marked_running = True
                stop = runner._run(tid, job.fresh_input, quiet, control)
                result = stop.status
            else:
                stop = runner.resume(tid, quiet, control)
                result = stop.status
        except ThreadBusy:
            result, stop = "running elsewhere", None
        except (AwaitingDecision, AlreadyDecided, NotAtGate) as exc:
            result, stop = f"nothing to do: {exc}", None
        except Exception as exc:  # noqa: BLE001 - the job records it; the worker goes on
            reason = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            sink({"event": "stop", "status": "failed", "graph": runner.spec.name, "error": reason, "job": job.id})
            writer.flush()
            runner.give_back(tid)
            if is_connection_error(exc):
                self._close(lambda: jobs.release(pool, job.id, f"database error: {reason}", delay_seconds=1.0, worker_id=self.worker_id))
            else:
                self._close(lambda: jobs.finish(pool, job.id, reason, failed=True, worker_id=self.worker_id))
            self.log(f"{tid}: job {job.id} ({job.kind}) failed: {reason}", event="job_failed", level="error", thread_id=tid, job=job.id, kind=job.kind, error=reason)
            return False
        if stop is not None:
            sink({**stop_event(stop), "job": job.id})
        if stop is not None and stop.status == "interrupted":
            writer.flush()  # the stop is written before the job goes back: a watcher never misses it
            runner.give_back(tid)
            self._close(lambda: jobs.release(pool, job.id, "drained", worker_id=self.worker_id))
            self.log(f"{tid}: job {job.id} ({job.kind}) -> {result}", event="job_done", thread_id=tid, job=job.id, kind=job.kind, result=result)
            return False
        # Closed by the writer, after the stop is written (a watcher never misses it), with the
        # other runs' jobs that ended meanwhile, their claims given back first: one statement
        # each for them all, off this thread. Until then the job stays 'doing', so
        # no other job of the thread is claimed before this one's stop is out; the worker's
        # drain writes the last batch (EventWriter.close) before it unregisters.
        writer.after_written((job.id, result, tid if runner.held else None))
        self.log(f"{tid}: job {job.id} ({job.kind}) -> {result}", event="job_done", thread_id=tid, job=job.id, kind=job.kind, result=result)
        return True

    def _close(self, write: Callable[[], None]) -> None:
        try:
            write()
        except psycopg.Error:
            pass  # the job stays 'doing' under this worker; reaping or unregistering hands it on

    def _listen(self) -> None:
        """Wake the loop on NOTIFY; reconnect quietly if the connection drops (polling covers)."""
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {jobs.JOBS_CHANNEL}")
                    while not self._stopping.is_set():
                        if progress.wait_for_notify(conn, 0.5):
                            self._wake.set()
            except psycopg.Error:
                self._stopping.wait(1.0)


# --- the process -------------------------------------------------------------------------------


def context_factory(settings: Any, model_concurrency: int | None) -> Callable[[ConnectionPool], SignoffContext]:
    """How a worker builds its run context from the environment (models built on first use)."""

    def make(pool: ConnectionPool) -> SignoffContext:
        import dataclasses

        from runtime.session import make_context
        from nodes.models import warm_up
        from nodes.resilient import ModelLimiter

        from nodes.models import check_spec
        from runtime.project import config_path

        if config_path() is not None:
            # A LangGraph project's graphs bring their own models: Signoff's are built the first
            # time one of its own graphs runs here (LazyRegistry locks, so once), so a worker for
            # a project needs neither the local model's extra nor its server; a bad value still
            # stops it now.
            check_spec(settings.model, settings)
            return dataclasses.replace(make_context(settings, pool, eager=False), model_limiter=ModelLimiter(model_concurrency))
        # Models now, not on first use: a worker calls models anyway, a bad model configuration
        # should stop it at start, and its run threads must not race to start the local server.
        # The judging models (SIGNOFF_REVIEW_MODEL) are built on first use (LazyRegistry locks,
        # so concurrent run threads start its local server once).
        context = make_context(settings, pool, eager=True)
        warm_up(context.models.resolve())  # the OpenAI client's lazy first-call set-up, once, not in 100 threads at once
        return dataclasses.replace(context, model_limiter=ModelLimiter(model_concurrency))

    return make


def serve(concurrency: int, *, log: Log, metrics: tuple[str, int] | None = None) -> int:
    """Run a worker in this process with signal handling: the first SIGTERM/SIGINT drains,
    a second exits at once (code 130). `metrics`: (host, port) to serve /metrics, /healthz
    and /readyz on."""
    import signal

    from checkpoint.database import resolve_url
    from checkpoint.settings import Settings

    settings = Settings.from_env()
    if metrics is not None:
        from observability.endpoint import serve_metrics

        serve_metrics(*metrics, resolve_url(settings))
    worker = Worker(resolve_url(settings), context_factory(settings, settings.model_concurrency),
                    WorkerOptions(concurrency=concurrency, prune_after_days=settings.prune_after_days), log=log)

    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received:  # the second signal, however soon after the first
            os._exit(130)
        received.append(signum)
        worker.request_stop(signal.Signals(signum).name)
        log(f"{signal.Signals(signum).name}: draining (running threads stop at their next step; again to exit now)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return worker.run()


def main(argv: list[str] | None = None) -> int:  # `python -m runtime.worker [--concurrency N]`
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runtime.worker")
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)

    def log(line: str, **fields: Any) -> None:
        print(line, flush=True)

    return serve(args.concurrency, log=log)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
