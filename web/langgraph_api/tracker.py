"""The serve process's side of runs, in one background thread: record how each run ended and
queue its webhook in the notification outbox (webhooks.py), start the runs queued behind a
thread's run (multitask_strategy "enqueue"), and, when runs wait and no worker is live, run a
worker inside `serve` so a run never waits for one. `serve` delivers runs' webhooks from the
outbox from its start (web/server.py), as every worker does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

log = logging.getLogger("signoff.langgraph_api")

POLL_SECONDS = 0.5
MIN_PASS_SECONDS = 0.2

_started: dict[int, "Tracker"] = {}
_mutex = threading.Lock()


def ensure_started(pool: Any) -> None:
    with _mutex:
        if id(pool) not in _started:
            tracker = _started[id(pool)] = Tracker(pool)
            threading.Thread(target=tracker.loop, name="signoff-api-runs", daemon=True).start()
            listen(pool.conninfo)


def wake() -> None:
    for tracker in list(_started.values()):
        tracker.event.set()


class Waiters:
    """Requests waiting for a thread to move (runs.wait, join, streams), woken by the progress
    notifications workers send with every batch of a run's events (checkpoint/events.py)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._by_thread: dict[str, set[tuple[Any, asyncio.Event]]] = {}

    def notify(self, thread_id: str) -> None:
        with self._mutex:
            waiting = list(self._by_thread.get(thread_id, ()))
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)

    def watched(self, thread_id: str) -> bool:
        with self._mutex:
            return bool(self._by_thread.get(thread_id))

    @asynccontextmanager
    async def watching(self, thread_id: str) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """`changed(timeout)` returns when the thread's run wrote something, or after `timeout`."""
        item = (asyncio.get_running_loop(), asyncio.Event())
        with self._mutex:
            self._by_thread.setdefault(thread_id, set()).add(item)

        async def changed(timeout: float) -> None:
            try:
                await asyncio.wait_for(item[1].wait(), timeout)
            except asyncio.TimeoutError:
                pass
            item[1].clear()

        try:
            yield changed
        finally:
            with self._mutex:
                held = self._by_thread.get(thread_id, set())
                held.discard(item)
                if not held:
                    self._by_thread.pop(thread_id, None)


WAITERS = Waiters()


def listen(conninfo: str) -> None:
    """Wake the requests waiting on a thread, and the tracker, at each batch of its progress
    (while the database blinks, both fall back to polling)."""
    from checkpoint.events import PROGRESS_CHANNEL, listen_in_background

    listen_in_background(conninfo, PROGRESS_CHANNEL, _progressed, name="signoff-api-listen")


def _progressed(thread_id: str) -> None:
    WAITERS.notify(thread_id)
    wake()


class Tracker:
    def __init__(self, pool: Any) -> None:
        from web.langgraph_api.completion import Completions

        self.pool = pool
        self.event = threading.Event()
        self.worker: Any = None
        self.completing = Completions()

    def loop(self) -> None:
        while True:
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the pool closed, the database blinked: try again
                log.debug("run tracker pass failed", exc_info=True)
            self.event.wait(POLL_SECONDS)
            self.event.clear()
            time.sleep(MIN_PASS_SECONDS)  # woken by every batch of progress: one pass covers them all

    def once(self) -> None:
        from web.langgraph_api.runs import FINAL, _RUN, live_status

        with self.pool.connection() as conn:
            rows = conn.execute(_RUN + "WHERE r.status IN ('pending', 'running') ORDER BY r.created_at").fetchall()
        waiting_jobs = False
        self.finish_all([(row, live_status(row)) for row in rows if live_status(row) in FINAL])
        started = []
        for row in rows:
            status = live_status(row)
            if status in FINAL:
                continue
            if row["job_id"] is None:
                self.start_queued(row, rows)
            elif status != row["status"]:
                started.append(row["run_id"])
            waiting_jobs = waiting_jobs or row["job_status"] == "todo"
        if started:  # pending -> running, the only move between open statuses
            with self.pool.connection() as conn:
                conn.execute("UPDATE api_runs SET status = 'running', updated_at = now() WHERE run_id = ANY(%s) AND status = 'pending'",
                             (started,))
        if waiting_jobs:
            self.ensure_worker()
        self.completing.run(self.pool, WAITERS.watched)

    def finish_all(self, ended: list[tuple[dict[str, Any], str]]) -> None:
        """Record how the runs ended: those without a webhook in one statement, each with one in
        a transaction of its own that queues its webhook; then their on_completion."""
        from web.langgraph_api.webhooks import record_end

        recorded: list[dict[str, Any]] = []
        plain = [(row, status) for row, status in ended if not row.get("webhook")]
        if plain:
            errors = [(row["job_result"] or "the run failed") if status == "error" else None for row, status in plain]
            with self.pool.connection() as conn:
                done = conn.execute("UPDATE api_runs SET status = d.status, error = d.error, updated_at = now() "
                                    "FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS d(run_id, status, error) "
                                    "WHERE api_runs.run_id = d.run_id AND api_runs.status IN ('pending', 'running') "
                                    "RETURNING api_runs.run_id",
                                    ([row["run_id"] for row, _ in plain], [status for _, status in plain], errors)).fetchall()
            ids = {r["run_id"] for r in done}
            recorded += [row for row, _ in plain if row["run_id"] in ids]  # not those another process recorded first
        for row, status in ended:
            if row.get("webhook"):
                error = (row["job_result"] or "the run failed") if status == "error" else None
                if record_end(self.pool, row, status, error):
                    recorded.append(row)
        for row in recorded:
            self.completing.add(row)  # on_completion "delete": its thread goes, unless a person must decide it

    def start_queued(self, row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """A run queued behind others of its thread starts once none before it is open."""
        from web.decide import HttpError
        from web.langgraph_api.assistants import entry_for
        from web.langgraph_api.runs import FINAL, last_event, launch, live_status, threads_lock
        from checkpoint.errors import SignoffError

        ahead = [r for r in rows if r["thread_id"] == row["thread_id"] and r["created_at"] < row["created_at"]
                 and (r["job_id"] is None or live_status(r) not in FINAL)]
        if ahead:
            return
        from checkpoint import threads
        from checkpoint.tokens import reviewer_by_id
        from web.langgraph_api.runs import job_running

        thread = threads.get(self.pool, row["thread_id"])
        if thread is not None and (thread.status in ("queued", "running") or job_running(self.pool, row["thread_id"])):
            return  # still busy with work started elsewhere (the CLI, a worker's recovery)
        kwargs = dict(row["kwargs"])
        opts = {**kwargs, "metadata": row["metadata"]}
        try:
            with threads_lock(self.pool, row["thread_id"]):
                with self.pool.connection() as conn:
                    still = conn.execute("SELECT 1 FROM api_runs WHERE run_id = %s AND job_id IS NULL AND status = 'pending'",
                                         (row["run_id"],)).fetchone()
                if still is None:
                    return  # another serve process started it (or it was cancelled)
                token_id = row.get("token_id")
                if token_id is not None and reviewer_by_id(self.pool, token_id) is None:
                    raise HttpError(403, f"the token {row['actor']} queued this run with was revoked before it started: "
                                         "nothing was run or decided; send it again with a live token")
                mark = last_event(self.pool, row["thread_id"])
                job, checkpoint, done = launch(self.pool, row["thread_id"], entry_for(row["graph"]), opts, row["actor"],
                                               token_id=token_id)
            with self.pool.connection() as conn:
                conn.execute("UPDATE api_runs SET job_id = %s, from_checkpoint = %s, from_event = %s, status = %s, updated_at = now() "
                             "WHERE run_id = %s", (job, checkpoint, mark, "success" if done else "pending", row["run_id"]))
        except (HttpError, SignoffError) as exc:
            from web.langgraph_api.webhooks import record_end

            record_end(self.pool, row, "error", str(exc)[:500])

    def ensure_worker(self) -> None:
        """No live worker takes the waiting runs: run one in this process (once)."""
        from checkpoint.workers import any_accepting

        if self.worker is not None or any_accepting(self.pool):
            return
        from checkpoint.database import resolve_url
        from checkpoint.settings import Settings
        from runtime.session import make_context
        from runtime.worker import Worker, WorkerOptions

        settings = Settings.from_env()
        self.worker = Worker(resolve_url(settings), lambda pool: make_context(settings, pool, eager=False),
                             WorkerOptions(concurrency=8), log=lambda line, **fields: log.info(line))
        threading.Thread(target=self.worker.run, name="signoff-serve-worker", daemon=True).start()
