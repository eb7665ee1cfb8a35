"""A gate's deadline fires in a running worker, read with the worker's injected clock: no
test here sleeps. The worker runs in this process (a thread), with scripted models."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from checkpoint import jobs, threads
from graphs.registry import SUPPORT
from runtime.thread_runner import EXPIRY_ACTOR
from graphs.support import HOLDING_REPLY
from runtime.worker import Worker, WorkerOptions
from nodes.context import SignoffContext
from tests.conftest import FAST_POLICY, count_rows
from tests.procs import wait_until
from tests.scripted import CANNOT_ANSWER, scripted_registry

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TECHNICAL = [("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER)]


class Clock:
    """The worker's clock; the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def worker(database_url: str, clock: Clock) -> Iterator[Worker]:
    """A worker in a thread of this process, drained and joined at teardown."""
    models = scripted_registry(TECHNICAL)
    worker = Worker(
        database_url,
        lambda pool: SignoffContext(models=models, pool=pool, policy=FAST_POLICY, clock=clock),
        WorkerOptions(concurrency=2, poll=0.05, sweep=0.02),
    )
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        assert worker.ready.wait(30)
        yield worker
    finally:
        worker.request_stop("test over")
        runner.join(30)
        assert not runner.is_alive(), "the worker did not stop"


def submit(pool, tid: str, hours: float = 24.0) -> None:
    jobs.submit(pool, tid, "support", "The app crashes on start", graph_input=SUPPORT.make_input("The app crashes on start", {}),
                deadline_hours=hours, actor="tester")


def at_gate(pool, tid: str) -> bool:
    row = threads.get(pool, tid)
    return row is not None and row.status == "waiting" and jobs.active_job(pool, tid) is None


def test_a_deadline_fires_in_a_running_worker_when_its_clock_passes_it(pool, worker, clock):
    submit(pool, "dl1")
    wait_until(lambda: at_gate(pool, "dl1"), what="dl1 at its gate")
    assert threads.get(pool, "dl1").deadline == NOW + timedelta(hours=24), "the deadline is set with the worker's clock"

    clock.at = NOW + timedelta(hours=23, minutes=59)
    sweeps = worker.sweeps
    wait_until(lambda: worker.sweeps >= sweeps + 3, what="three sweeps before the deadline")
    assert threads.get(pool, "dl1").status == "waiting", "nothing expires early"
    assert count_rows(pool, "approvals") == 0

    clock.at = NOW + timedelta(hours=24, seconds=1)
    wait_until(lambda: threads.get(pool, "dl1").status == "finished", what="the deadline to fire")
    with pool.connection() as conn:
        decision = conn.execute("SELECT decision, actor FROM approvals WHERE thread_id = 'dl1'").fetchall()
        kinds = [r["kind"] for r in conn.execute("SELECT kind FROM jobs WHERE thread_id = 'dl1' ORDER BY id")]
    assert [(d["decision"], d["actor"]) for d in decision] == [("expired", EXPIRY_ACTOR)]
    assert kinds == ["start", "deadline"]
    assert count_rows(pool, "outbox", thread_id="dl1", kind="holding") == 1
    with pool.connection() as conn:
        body = conn.execute("SELECT body FROM outbox WHERE thread_id = 'dl1'").fetchone()["body"]
    assert body == HOLDING_REPLY


def test_a_decision_before_the_deadline_wins_and_the_deadline_does_nothing(pool, worker, clock):
    from runtime.thread_runner import ThreadRunner

    submit(pool, "dl2", hours=1)
    wait_until(lambda: at_gate(pool, "dl2"), what="dl2 at its gate")
    ThreadRunner(pool, SUPPORT).decide("dl2", "approved", actor="tester")
    jobs.enqueue(pool, "dl2", "decision")
    wait_until(lambda: threads.get(pool, "dl2").status == "finished", what="the approval to finish dl2")
    clock.at = NOW + timedelta(hours=2)
    sweeps = worker.sweeps
    wait_until(lambda: worker.sweeps >= sweeps + 3, what="sweeps past the deadline")
    assert count_rows(pool, "approvals", thread_id="dl2") == 1
    assert count_rows(pool, "outbox", thread_id="dl2", kind="reply") == 1
    assert count_rows(pool, "jobs", thread_id="dl2", kind="deadline") == 0
