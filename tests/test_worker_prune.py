"""Bounded storage for the worker's own tables: `db prune` and a worker's automatic pruning
(SIGNOFF_PRUNE_AFTER_DAYS) delete a finished thread's old checkpoints, closed jobs and
progress events (keeping its last checkpoint and last stop), and nothing of a thread that is
waiting (a running one: tests/test_prune.py). The worker runs in this process (a thread), with scripted models."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest

from checkpoint import jobs, threads
from checkpoint.settings import Settings, SettingsError
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from runtime.worker import Worker, WorkerOptions
from nodes.context import SignoffContext
from tests.conftest import FAST_POLICY
from tests.procs import wait_until
from tests.scripted import CANNOT_ANSWER, scripted_registry

TECHNICAL = [("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER)]


def start_worker(database_url: str, options: WorkerOptions) -> tuple[Worker, threading.Thread]:
    models = scripted_registry(TECHNICAL)
    worker = Worker(database_url, lambda pool: SignoffContext(models=models, pool=pool, policy=FAST_POLICY), options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(30)
    return worker, thread


def stop_worker(worker: Worker, thread: threading.Thread) -> None:
    worker.request_stop("test over")
    thread.join(30)
    assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def worker(database_url: str) -> Iterator[Worker]:
    """A worker that does not prune (the threads are made first, pruned afterwards)."""
    worker, thread = start_worker(database_url, WorkerOptions(concurrency=4, poll=0.05, sweep=0.05))
    try:
        yield worker
    finally:
        stop_worker(worker, thread)


def submit(pool, tid: str) -> None:
    jobs.submit(pool, tid, "support", f"The app crashes on start ({tid})", graph_input=SUPPORT.make_input("The app crashes on start", {}),
                deadline_hours=24.0, actor="tester")


def settled(pool, tid: str, status: str) -> bool:
    row = threads.get(pool, tid)
    return row is not None and row.status == status and jobs.active_job(pool, tid) is None


def rows_of(pool, tid: str) -> dict[str, Any]:
    """Every row prune could delete, by key, and the ones it must keep, as counts."""
    with pool.connection() as conn:
        def keys(sql: str) -> list[tuple]:
            return [tuple(r.values()) for r in conn.execute(sql, {"t": tid})]
        return {
            "checkpoints": keys("SELECT checkpoint_id FROM checkpoints WHERE thread_id = %(t)s ORDER BY 1"),
            "writes": keys("SELECT checkpoint_id, task_id, idx FROM checkpoint_writes WHERE thread_id = %(t)s ORDER BY 1, 2, 3"),
            "blobs": keys("SELECT channel, version FROM checkpoint_blobs WHERE thread_id = %(t)s ORDER BY 1, 2"),
            "jobs": keys("SELECT id, status FROM jobs WHERE thread_id = %(t)s ORDER BY 1"),
            "events": keys("SELECT id, event->>'event' FROM progress_events WHERE thread_id = %(t)s ORDER BY 1"),
            "thread": keys("SELECT status, updated_at FROM threads WHERE thread_id = %(t)s"),
            "kept": keys("SELECT (SELECT count(*) FROM audit_events WHERE thread_id = %(t)s), (SELECT count(*) FROM approvals WHERE thread_id = %(t)s), "
                         "(SELECT count(*) FROM tickets WHERE thread_id = %(t)s), (SELECT count(*) FROM outbox WHERE thread_id = %(t)s)"),
        }


def make_threads(pool) -> None:
    """done-1, done-2 finished by the worker (two jobs each); waiting-1 at its gate (one job)."""
    for tid in ("done-1", "done-2", "waiting-1"):
        submit(pool, tid)
    wait_until(lambda: all(settled(pool, t, "waiting") for t in ("done-1", "done-2", "waiting-1")), what="three threads at their gates")
    runner = ThreadRunner(pool, SUPPORT)
    for tid in ("done-1", "done-2"):
        runner.decide(tid, "approved", actor="tester")
        jobs.enqueue(pool, tid, "decision")
    wait_until(lambda: all(settled(pool, t, "finished") for t in ("done-1", "done-2")), what="two threads finished")


def assert_pruned(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["checkpoints"] == before["checkpoints"][-1:], "only the last checkpoint is kept"
    assert after["jobs"] == [], "its closed jobs are gone"
    assert after["events"] == [e for e in before["events"] if e[1] == "stop"][-1:], "only its last stop event is kept"
    assert after["thread"] == before["thread"] and after["kept"] == before["kept"], "thread, audit, decisions, side effects kept"


def test_db_prune_takes_the_worker_rows_of_finished_threads_and_nothing_of_a_waiting_one(cli, pool, worker):
    make_threads(pool)
    before = {t: rows_of(pool, t) for t in ("done-1", "done-2", "waiting-1")}
    assert all(len(before[t]["jobs"]) == 2 and len(before[t]["events"]) > 3 for t in ("done-1", "done-2"))
    assert len(before["waiting-1"]["jobs"]) == 1 and before["waiting-1"]["events"]

    dry = json.loads(cli("db", "prune", "--dry-run", "--json").output)
    assert {t: rows_of(pool, t) for t in before} == before, "a dry run deletes nothing"
    result = cli("db", "prune", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)

    assert report["threads"] == 2 and dry["rows"] == report["rows"]
    assert report["rows"]["jobs"] == 4
    assert report["rows"]["progress_events"] == sum(len(before[t]["events"]) - 1 for t in ("done-1", "done-2"))
    for tid in ("done-1", "done-2"):
        assert_pruned(before[tid], rows_of(pool, tid))
    assert rows_of(pool, "waiting-1") == before["waiting-1"], "the waiting thread was touched"
    assert "nothing to prune" in cli("db", "prune").output


def test_a_worker_prunes_finished_threads_as_it_goes_when_told_to(pool, database_url, worker):
    make_threads(pool)
    with pool.connection() as conn:  # they finished two days ago (the database's clock decides)
        conn.execute("UPDATE threads SET updated_at = updated_at - interval '2 days' WHERE thread_id IN ('done-1', 'done-2')")
    before = {t: rows_of(pool, t) for t in ("done-1", "done-2", "waiting-1")}

    pruner, thread = start_worker(database_url, WorkerOptions(concurrency=1, poll=0.05, sweep=0.05, prune_after_days=1.0,
                                                              prune_every=0.05, prune_limit=1))
    try:
        wait_until(lambda: pruner.prunes >= 3, what="three automatic prunes")
        for tid in ("done-1", "done-2"):  # one thread per prune (prune_limit=1), both by now
            assert_pruned(before[tid], rows_of(pool, tid))
        assert rows_of(pool, "waiting-1") == before["waiting-1"], "the waiting thread was touched"
    finally:
        stop_worker(pruner, thread)


def test_automatic_pruning_is_off_unless_set_and_a_bad_value_is_named(pool):
    assert Settings.from_env({}).prune_after_days is None
    assert Settings.from_env({"SIGNOFF_PRUNE_AFTER_DAYS": "7"}).prune_after_days == 7.0
    for bad in ("0", "-1", "nan", "soon", "1e9"):
        with pytest.raises(SettingsError, match="SIGNOFF_PRUNE_AFTER_DAYS"):
            Settings.from_env({"SIGNOFF_PRUNE_AFTER_DAYS": bad})
