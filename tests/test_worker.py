"""`signoff worker`: real worker processes, real PostgreSQL, a scripted model server.

A thread submitted without a terminal runs to its gate in the worker; a decision recorded
from elsewhere is picked up and finished there; the progress is persisted for any watcher.
"""

from __future__ import annotations

import psycopg
import pytest

from checkpoint import events, jobs, threads
from checkpoint.threads import _RUN_LOCK_CLASS
from checkpoint.workers import LockSession
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows
from tests.fault_server import ok
from tests.scripted import CANNOT_ANSWER
from tests.procs import wait_until
from tests.worker_procs import submit, workers  # noqa: F401 - fixture


def status_of(pool, tid: str) -> str | None:
    row = threads.get(pool, tid)
    return row.status if row else None


def decide(pool, tid: str, verdict: str = "approved", note: str = "") -> None:
    """What `signoff approve` does with a live worker: record the decision, hand it over."""
    ThreadRunner(pool, SUPPORT).decide(tid, verdict, actor="tester", note=note)  # type: ignore[arg-type]
    jobs.enqueue(pool, tid, "decision")


@pytest.fixture
def server(server):
    """The test's model server, scripted so the support graph escalates (technical, no answer)."""
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    return server


def test_a_detached_thread_runs_to_its_gate_in_the_worker_and_a_decision_finishes_it(pool, workers):
    worker = workers("--concurrency", "4")
    submit(pool, "support", "w1", "The sync engine corrupts my notes", email="a@example.com")
    wait_until(lambda: status_of(pool, "w1") == "waiting" and jobs.active_job(pool, "w1") is None, timeout=30, what="the worker to bring w1 to its gate")
    assert count_rows(pool, "tickets", thread_id="w1") == 1
    assert not jobs.is_claimed(pool, "w1", _RUN_LOCK_CLASS), "a closed job's claim is given back (before it closed)"

    decide(pool, "w1")
    wait_until(lambda: status_of(pool, "w1") == "finished" and jobs.active_job(pool, "w1") is None, timeout=30, what="the worker to finish w1")
    assert count_rows(pool, "outbox", thread_id="w1") == 1
    assert count_rows(pool, "jobs", thread_id="w1", status="done") == 2

    seen = [e.event for e in events.read_since(pool, "w1")]
    ends = [e["node"] for e in seen if e["event"] == "node_end"]
    assert ends == ["classify", "technical_agent", "escalate", "review", "send_approved_reply"]
    assert all(isinstance(e["duration"], float) for e in seen if e["event"] == "node_end")
    assert [e["status"] for e in seen if e["event"] == "stop"] == ["waiting", "finished"]
    assert any(e["event"] == "node_end" and e["calls"] and e["calls"][0]["model"] == "openai:test-model" for e in seen)
    assert "w1: job" in worker.output


def test_a_job_handed_to_the_event_writer_closes_only_after_the_events_before_it_are_written(pool):
    """A worker closes its jobs through its EventWriter (`after_written`), in batches: the
    close must come after the run's stop is in `progress_events` (a watcher that sees the job
    closed never misses the stop), and every token of a batch reaches `on_written` in one call."""
    submit(pool, "support", "ew1", "The sync engine corrupts my notes")
    submit(pool, "support", "ew2", "The sync engine corrupts my notes")
    claimed = {job.thread_id: job for job in jobs.claim(pool, worker_id=None, limit=2)}  # type: ignore[arg-type]
    calls: list[tuple[list, list[str]]] = []

    def on_written(done: list) -> None:
        stops = [e.thread_id for tid in ("ew1", "ew2") for e in events.read_since(pool, tid) if e.event["event"] == "stop"]
        calls.append((done, stops))
        jobs.finish_all(pool, done)

    writer = events.EventWriter(pool, interval=3600, on_written=on_written)  # no background write: only flush/close
    try:
        for tid in ("ew1", "ew2"):
            writer.append(tid, {"event": "stop", "status": "waiting"})
            writer.after_written((claimed[tid].id, "waiting"))
        assert calls == [] and jobs.active_job(pool, "ew1")["status"] == "doing", "nothing closes before its events are written"
        writer.flush()
        assert calls == [([(claimed["ew1"].id, "waiting"), (claimed["ew2"].id, "waiting")], ["ew1", "ew2"])]
        assert jobs.active_job(pool, "ew1") is None and jobs.active_job(pool, "ew2") is None
        assert count_rows(pool, "jobs", status="done", result="waiting") == 2
    finally:
        writer.close()


def test_a_worker_takes_the_claims_of_a_claimed_batch_in_one_go_never_twice_and_never_one_held_elsewhere(pool, database_url):
    """LockSession.take/release, how a worker claims the threads of the jobs it claimed (one
    statement per batch) and gives a claim back as its job closes."""
    session = LockSession(database_url)
    try:
        with threads.claimed(pool, "busy"):  # an inline run holds this one
            assert session.take(["a", "busy", "b"]) == {"a", "b"}
        assert jobs.is_claimed(pool, "a", _RUN_LOCK_CLASS) and jobs.is_claimed(pool, "b", _RUN_LOCK_CLASS)
        assert not jobs.is_claimed(pool, "busy", _RUN_LOCK_CLASS), "not taken: the worker's job for it finds it busy"
        assert session.take(["a"]) == set(), "a thread it already runs is not taken again"
        session.release(["a", "busy"])
        assert not jobs.is_claimed(pool, "a", _RUN_LOCK_CLASS), "one release frees it: the lock was never stacked"
        assert jobs.is_claimed(pool, "b", _RUN_LOCK_CLASS)
        with threads.claimed(pool, "a"):  # an inline run can take it now
            pass
        assert session.take(["a"]) == {"a"}
    finally:
        session.close()
    # PostgreSQL frees a session's advisory locks as its backend exits, just after the client
    # hangs up: under load, a check in the same millisecond can still see them (seen in CI).
    wait_until(lambda: not jobs.is_claimed(pool, "b", _RUN_LOCK_CLASS), timeout=10, what="the session's end to free what it held")
