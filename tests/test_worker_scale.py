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
from runtime.thread_runner import ThreadRunner
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


def fingerprint(pool, tid: str) -> dict:
    """Everything a run of the thread writes: checkpoints (with their writes and blobs), the
    threads row, progress events, audit events, side effects."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = %(t)s) AS checkpoints, "
            "(SELECT count(*) FROM checkpoint_writes WHERE thread_id = %(t)s) AS writes, "
            "(SELECT count(*) FROM checkpoint_blobs WHERE thread_id = %(t)s) AS blobs, "
            "(SELECT row_to_json(t)::text FROM threads t WHERE thread_id = %(t)s) AS thread, "
            "(SELECT count(*) FROM progress_events WHERE thread_id = %(t)s) AS events, "
            "(SELECT count(*) FROM audit_events WHERE thread_id = %(t)s) AS audit, "
            "(SELECT count(*) FROM tickets WHERE thread_id = %(t)s) AS tickets, "
            "(SELECT count(*) FROM outbox WHERE thread_id = %(t)s) AS outbox, "
            "(SELECT row_to_json(j)::text FROM jobs j WHERE thread_id = %(t)s ORDER BY id DESC LIMIT 1) AS job",
            {"t": tid},
        ).fetchone()


def test_a_frozen_worker_is_fenced_off_and_its_thread_taken_over(pool, server, workers):
    """SIGSTOP stands in for a machine gone or a process frozen past its lease: it holds its
    database sessions but says nothing. After the stale bound the other worker ends those
    sessions and runs the thread. Then the frozen worker wakes up (SIGCONT) in the middle of
    its node, its model call answered: it writes nothing (no checkpoint, status, event, audit
    or side effect), its job stays as the other worker closed it, and it stops (exit 5)."""
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
        before = fingerprint(pool, "f1")
        release.set()  # its classify call answers as soon as it runs again
        frozen.send(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while frozen.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        woke_exit = frozen.popen.poll()
        time.sleep(0.5)  # anything it might still have had in flight
        after = fingerprint(pool, "f1")
    finally:
        if frozen.popen.poll() is None:
            frozen.kill()
        release.set()
    assert 5.0 <= handed_over <= 10.0, f"handed over after {handed_over:.1f}s (stale after 6s, swept every 1s)"
    assert before["tickets"] == 1 and '"status":"waiting"' in before["thread"]
    assert after == before, f"the fenced worker wrote after the takeover:\nbefore {before}\nafter  {after}"
    assert woke_exit == 5, f"the woken worker should stop with 5 (its claims are gone), got {woke_exit}:\n{frozen.output}"
    assert "died" in other.output
    assert server.matching(CLASSIFY) == 2, "the frozen worker's call and the other worker's"
