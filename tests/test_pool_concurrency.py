"""Many decisions at once never exhaust a connection pool: 50 API approvals of 50 threads and
50 of one thread against a real `signoff serve`, and a worker expiring as many overdue gates
as it runs at once. Every client is answered within seconds, with success for a decision that
was recorded, no PoolTimeout anywhere, and exactly one decision per gate visit."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import httpx
import pytest

from checkpoint import jobs, threads, tokens
from graphs.registry import SUPPORT
from runtime.thread_runner import EXPIRY_ACTOR, ThreadRunner
from runtime.worker import Worker, WorkerOptions
from nodes.context import SignoffContext
from nodes.gates import content_digest
from tests.conftest import FAST_POLICY, count_rows
from tests.procs import CliProcess, spawn_cli, wait_until
from tests.scripted import CANNOT_ANSWER, scripted_registry

TECHNICAL = [("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER)]
#: What "within seconds" means here: far below the pool's 30 s checkout timeout.
ANSWERED_WITHIN = 10.0


def waiting_threads(pool, count: int, prefix: str) -> dict[str, str]:
    """`count` support threads waiting at their gate: thread id -> the digest a reviewer approves."""
    context = SignoffContext(models=scripted_registry(TECHNICAL), pool=pool, policy=FAST_POLICY)
    digests = {}
    for n in range(count):
        tid = f"{prefix}{n}"
        stop = ThreadRunner(pool, SUPPORT, context).start(tid, f"The app crashes on start ({n})", {}, lambda e: None)
        assert stop.status == "waiting", stop
        digests[tid] = content_digest(SUPPORT.review_content(stop.values))
    return digests


@pytest.fixture
def serve(env) -> Iterator[tuple[str, CliProcess]]:
    """`signoff serve` as a user starts it; its base URL and process (stopped at teardown)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = spawn_cli(["serve", "--port", str(port)], {**env, "SIGNOFF_SECRET_KEY": "k" * 40})
    try:
        proc.wait_for(r"serving on", timeout=60)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        for stream in (proc.popen.stdout, proc.popen.stderr):
            if stream is not None:
                stream.close()


def approve_all_at_once(base: str, token: str, requests: list[tuple[str, str]]) -> list[tuple[int, float, str]]:
    """Each (thread, digest) approved from its own client thread, all let go together:
    [(status, seconds to the answer, body)]."""
    barrier = threading.Barrier(len(requests))
    answers: list[tuple[int, float, str]] = [(0, 0.0, "")] * len(requests)

    def approve(n: int, tid: str, digest: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            barrier.wait()
            started = time.monotonic()
            response = client.post(f"/api/threads/{tid}/approve", json={"expect": digest},
                                   headers={"Authorization": f"Bearer {token}"})
            answers[n] = (response.status_code, time.monotonic() - started, response.text)

    clients = [threading.Thread(target=approve, args=(n, tid, digest)) for n, (tid, digest) in enumerate(requests)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(90)
    return answers


def test_fifty_api_approvals_of_fifty_threads_at_once_are_all_recorded_and_answered_within_seconds(pool, serve):
    base, proc = serve
    digests = waiting_threads(pool, 50, "many")
    token = tokens.create(pool, "alice")

    answers = approve_all_at_once(base, token, list(digests.items()))

    assert [status for status, _, _ in answers] == [202] * 50, [a for a in answers if a[0] != 202][:3]
    assert max(took for _, took, _ in answers) < ANSWERED_WITHIN
    for tid in digests:
        assert count_rows(pool, "approvals", thread_id=tid, actor="alice", decision="approved") == 1
    assert "PoolTimeout" not in proc.output and "Traceback" not in proc.output, proc.output


def test_fifty_api_approvals_of_one_thread_at_once_record_one_and_all_are_told_it_is_recorded(pool, serve):
    base, proc = serve
    [(tid, digest)] = waiting_threads(pool, 1, "one").items()
    token = tokens.create(pool, "alice")

    answers = approve_all_at_once(base, token, [(tid, digest)] * 50)

    assert [status for status, _, _ in answers] == [202] * 50, [a for a in answers if a[0] != 202][:3]
    assert max(took for _, took, _ in answers) < ANSWERED_WITHIN
    assert count_rows(pool, "approvals", thread_id=tid) == 1
    assert count_rows(pool, "jobs", thread_id=tid) == 1, "one run-on queued for the one decision"
    assert "PoolTimeout" not in proc.output and "Traceback" not in proc.output, proc.output


def test_a_worker_expires_as_many_overdue_gates_as_it_runs_at_once_without_exhausting_its_pool(pool, database_url):
    """45 overdue gates, a worker at --concurrency 45 (a pool of min(45, 32) + 4 connections):
    each expiry holds the thread's row lock, and none waits on the pool for a second connection."""
    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    at = [now]
    waiting_threads(pool, 45, "due")
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET deadline = %s WHERE thread_id LIKE 'due%%'", (now + timedelta(hours=1),))
    lines: list[str] = []
    watch = NestingWatch()
    import runtime.worker

    opened = runtime.worker.open_pool
    runtime.worker.open_pool = lambda *a, **k: watch.watch(opened(*a, **k))  # type: ignore[assignment]
    worker = Worker(database_url,
                    lambda p: SignoffContext(models=scripted_registry(TECHNICAL), pool=p, policy=FAST_POLICY, clock=lambda: at[0]),
                    WorkerOptions(concurrency=45, poll=0.05, sweep=0.05), log=lambda line, **fields: lines.append(line))
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        assert worker.ready.wait(60)
        at[0] = now + timedelta(hours=2)  # every deadline passes at once
        started = time.monotonic()
        wait_until(lambda: count_rows(pool, "approvals") >= 45 and not {"todo", "doing"} & set(jobs.counts(pool)),
                   timeout=90, what="the 45 expiries to be applied and run on")
        took = time.monotonic() - started
    finally:
        worker.request_stop("test over")
        runner.join(60)
        runtime.worker.open_pool = opened  # type: ignore[assignment]
    assert watch.nested == [], watch.nested[0]
    assert count_rows(pool, "approvals", decision="expired", actor=EXPIRY_ACTOR) == 45
    assert count_rows(pool, "approvals") == 45, "exactly one decision per gate visit"
    assert count_rows(pool, "jobs", status="failed") == 0
    assert {row.status for row in threads.list_by_status(pool, "waiting", "running", "failed", "finished")} == {"finished"}
    assert not [line for line in lines if "PoolTimeout" in line or "failed" in line], lines
    assert took < 30, f"the expiries took {took:.0f}s"


class NestingWatch:
    """Wraps the `connection()` of every pool opened while it watches, recording each checkout
    made by a thread that already holds a connection of the same pool (the stack says where)."""

    def __init__(self) -> None:
        self.nested: list[str] = []

    def watch(self, pool):
        import traceback
        from contextlib import contextmanager

        original, depth = pool.connection, threading.local()

        @contextmanager
        def connection(*args, **kwargs):
            held = getattr(depth, "n", 0)
            if held:
                self.nested.append("".join(traceback.format_stack(limit=12)))
            depth.n = held + 1
            try:
                with original(*args, **kwargs) as conn:
                    yield conn
            finally:
                depth.n = held

        pool.connection = connection
        return pool


def test_no_command_waits_for_a_pool_connection_while_holding_one(cli, env, pool, database_url, server, monkeypatch, reviewer):
    """Runs, sign-offs (approve, reject, an approval chain and its refund saga), and the
    deadline sweep, each in the CLI with every pool it opens watched."""
    import checkpoint.database
    from tests.fault_server import ok

    watch = NestingWatch()
    opened = checkpoint.database.open_pool
    monkeypatch.setattr(checkpoint.database, "open_pool", lambda *a, **k: watch.watch(opened(*a, **k)))
    server.rule("Classify the customer message", ok('{"intent": "billing"}'))
    server.rule("Extract the refund request", ok('{"order_id": "1042", "amount": null}'))
    from tests.conftest import expect

    assert cli("orders", "load").exit_code == 0
    assert cli("start", "support", "Please refund order 1042, it arrived broken", "--email", "maya.lopez@example.com",
               "--thread", "r1").exit_code == 0
    assert cli("reject", "r1", "--feedback", "Say sorry first").exit_code == 0
    approved = reviewer("sam")("approve", "r1", *expect(database_url, "r1"))
    assert approved.exit_code == 0 and "refunded" in approved.output, approved.output
    assert cli("start", "support", "Please refund order 1042, it arrived broken", "--email", "maya.lopez@example.com",
               "--thread", "r2", "--deadline", "0.0001").exit_code == 0
    wait_until(lambda: cli("expire").exit_code == 0 and count_rows(pool, "approvals", thread_id="r2", decision="expired") == 1,
               timeout=30, what="r2 to expire")

    # the HTTP API's decision, on a pool of its own, watched the same way
    from starlette.testclient import TestClient

    from web.app import WebContext, create_app

    assert cli("start", "support", "The app crashes on start", "--thread", "w1").exit_code == 0
    web_pool = watch.watch(opened(database_url))
    try:
        client = TestClient(create_app(WebContext(pool=web_pool, key=b"k" * 40, public_url="http://127.0.0.1:8321")))
        token = tokens.create(pool, "alice")
        answer = client.post("/api/threads/w1/approve", json={"expect": expect(database_url, "w1")[1]},
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202, answer.text
    finally:
        web_pool.close()
    assert watch.nested == [], watch.nested[0]
