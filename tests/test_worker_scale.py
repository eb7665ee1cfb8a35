"""Several workers on one PostgreSQL share the work; each thread runs once; a worker whose
machine is gone (frozen: process alive, silent) is fenced off and its threads taken over."""

from __future__ import annotations

import signal
import threading
import time

import psycopg
import pytest

from checkpoint import jobs
from graphs.registry import SUPPORT
from graphs.runner import ThreadRunner
from tests.fault_server import held, ok
from tests.scripted import CANNOT_ANSWER
from tests.procs import wait_until
from tests.worker_procs import submit, workers  # noqa: F401 - fixture

CLASSIFY = "Classify the customer message"


@pytest.fixture
def server(server):
    server.rule(CLASSIFY, ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    return server


def statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM threads GROUP BY status").fetchall())


def idle_queue(pool) -> bool:
    counts = jobs.counts(pool)
    return not counts.get("todo") and not counts.get("doing")


def test_two_workers_share_200_threads_and_each_runs_once(pool, database_url, server, workers):
    first, second = workers("--concurrency", "20"), workers("--concurrency", "20")
    tids = [f"s{i:03d}" for i in range(200)]
    for tid in tids:
        submit(pool, "support", tid, f"The sync engine corrupts my notes ({tid})")
    wait_until(lambda: statuses(database_url).get("waiting") == 200 and idle_queue(pool), timeout=240, what="200 threads at their gates")

    runner = ThreadRunner(pool, SUPPORT)
    for tid in tids:
        runner.decide(tid, "approved", actor="tester")
        jobs.enqueue(pool, tid, "decision")
    wait_until(lambda: statuses(database_url).get("finished") == 200 and idle_queue(pool), timeout=240, what="200 threads finished")

    with psycopg.connect(database_url) as conn:
        per_thread = conn.execute(
            "SELECT t.thread_id, (SELECT count(*) FROM tickets k WHERE k.thread_id = t.thread_id), "
            "(SELECT count(*) FROM outbox o WHERE o.thread_id = t.thread_id), "
            "(SELECT count(*) FROM audit_events a WHERE a.thread_id = t.thread_id AND a.kind = 'reply_sent') FROM threads t"
        ).fetchall()
        by_worker = dict(conn.execute("SELECT (event->>'worker')::int, count(*) FROM progress_events WHERE event->>'event' = 'run_started' GROUP BY 1").fetchall())
        runs = conn.execute("SELECT count(*) FROM progress_events WHERE event->>'event' = 'run_started'").fetchone()[0]
    assert all(row[1:] == (1, 1, 1) for row in per_thread), [r for r in per_thread if r[1:] != (1, 1, 1)][:5]
    assert runs == 400, "each thread ran once to its gate and once after its approval"
    assert len(by_worker) == 2 and min(by_worker.values()) > 0, f"both workers did work: {by_worker}"
    for tid in tids:
        assert server.matching(f"({tid})") == 2, f"{tid}: classify and the agent asked once each"


def test_a_frozen_worker_is_fenced_off_and_its_thread_taken_over(pool, server, workers):
    """SIGSTOP stands in for a machine gone: the process holds its database session but says
    nothing. After the stale bound the other worker ends that session and runs the thread."""
    release = threading.Event()
    server.once(CLASSIFY, held(release))
    frozen = workers()
    submit(pool, "support", "f1", "The sync engine corrupts my notes")
    try:
        wait_until(lambda: server.matching(CLASSIFY), what="the classify request")
        other = workers()
        frozen.send(signal.SIGSTOP)
        stopped_at = time.monotonic()
        with pool.connection() as conn:
            wait_until(lambda: conn.execute("SELECT count(*) AS n FROM jobs WHERE thread_id = 'f1' AND recoveries = 1").fetchone()["n"],
                       timeout=15, what="the frozen worker's job to be handed over")
        handed_over = time.monotonic() - stopped_at
        wait_until(lambda: jobs.active_job(pool, "f1") is None, timeout=30, what="f1 to settle")
    finally:
        frozen.kill()  # a machine gone never comes back (SIGKILL ends a stopped process too)
        release.set()
    assert 5.0 <= handed_over <= 10.0, f"handed over after {handed_over:.1f}s (stale after 6s, swept every 1s)"
    with pool.connection() as conn:
        row = conn.execute("SELECT status FROM threads WHERE thread_id = 'f1'").fetchone()
        tickets = conn.execute("SELECT count(*) AS n FROM tickets WHERE thread_id = 'f1'").fetchone()["n"]
    assert row["status"] == "waiting" and tickets == 1
    assert "died" in other.output
