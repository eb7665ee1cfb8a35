"""The worker through the CLI, as a person uses it from several shells (real processes).

`signoff worker` runs; `signoff start ... --detach` returns at once and the worker takes the
thread to its gate; `signoff approve` from another shell is finished by the worker while the
approver's terminal shows the progress; `signoff watch` from a third shell sees every node and
the final stop, live, and replays what it missed; `signoff workers` lists the live workers.
Without a worker, the same commands run the thread in the terminal, as they always did.
"""

from __future__ import annotations

import re
import socket

import pytest

from checkpoint import jobs, threads
from tests.conftest import count_rows
from tests.fault_server import ok
from tests.scripted import CANNOT_ANSWER
from tests.procs import spawn_cli, wait_until
from tests.worker_procs import workers  # noqa: F401 - fixture

NODE_LINE = re.compile(r"^[✓x] (\S+)\s", re.M)


@pytest.fixture
def server(server):
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    return server


def nodes_in(output: str) -> list[str]:
    return NODE_LINE.findall(output)


def at_gate(pool, tid: str) -> bool:
    row = threads.get(pool, tid)
    return row is not None and row.status == "waiting" and jobs.active_job(pool, tid) is None


def test_detach_then_approve_from_another_shell_while_a_third_watches(env, pool, workers):
    workers("--concurrency", "4")
    started = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "cli1", "--detach"], env)
    assert started.wait(30) == 0, started.output
    assert "thread cli1" in started.output and "queued" in started.output
    assert not nodes_in(started.output), "a detached start runs nothing in the terminal"

    watcher = spawn_cli(["watch", "cli1", "--to-end"], env)
    try:
        wait_until(lambda: at_gate(pool, "cli1"), timeout=30, what="the worker to bring cli1 to its gate")
        digest = watcher.wait_for(r"waiting at gate review \(digest (\w+)\)", timeout=30)[1]

        approver = spawn_cli(["approve", "cli1", "--note", "fine", "--expect", digest], env)
        assert approver.wait(60) == 0, approver.output
        assert nodes_in(approver.output) == ["review", "send_approved_reply"], approver.output
        assert "finished" in approver.output

        assert watcher.wait(30) == 0, watcher.output
    finally:
        watcher.kill()
    assert nodes_in(watcher.output) == ["classify", "technical_agent", "escalate", "review", "send_approved_reply"], watcher.output
    assert "finished" in watcher.output.splitlines()[-1] or "finished" in watcher.output
    assert threads.get(pool, "cli1").status == "finished"
    assert count_rows(pool, "outbox", thread_id="cli1") == 1 and count_rows(pool, "tickets", thread_id="cli1") == 1


def test_a_late_watch_replays_what_happened(env, pool, workers, cli):
    workers()
    started = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "cli2", "--detach"], env)
    assert started.wait(30) == 0, started.output
    wait_until(lambda: at_gate(pool, "cli2"), timeout=30, what="cli2 at its gate")
    result = cli("watch", "cli2")
    assert result.exit_code == 0, result.output
    assert nodes_in(result.output) == ["classify", "technical_agent", "escalate"]
    assert "waiting at gate review" in result.output


def test_without_a_worker_start_runs_inline_and_watch_replays_it(cli, pool):
    result = cli("start", "support", "The sync engine corrupts my notes", "--thread", "cli3")
    assert result.exit_code == 0, result.output
    assert nodes_in(result.output) == ["classify", "technical_agent", "escalate"]
    watched = cli("watch", "cli3")
    assert watched.exit_code == 0, watched.output
    assert nodes_in(watched.output) == ["classify", "technical_agent", "escalate"], "inline runs are persisted too"


def test_a_detached_start_without_a_worker_waits_for_one(cli, pool, workers):
    result = cli("start", "support", "The sync engine corrupts my notes", "--thread", "cli4", "--detach")
    assert result.exit_code == 0, result.output
    assert "no worker is running" in result.output
    assert threads.get(pool, "cli4").status == "queued"
    assert "nothing is waiting" in cli("pending").output or "cli4" not in cli("pending").output
    workers()
    wait_until(lambda: at_gate(pool, "cli4"), timeout=30, what="the worker started later to take cli4")


def test_workers_lists_the_live_workers(cli, workers):
    assert "no worker is running" in cli("workers").output
    proc = workers("--concurrency", "3")
    result = cli("workers")
    assert result.exit_code == 0, result.output
    assert socket.gethostname() in result.output and str(proc.pid) in result.output
    assert re.search(r"\b3\b", result.output), "its concurrency"


def test_watch_an_unknown_thread_is_one_line_and_exit_3(cli):
    result = cli("watch", "nope")
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1 and "signoff pending" in result.output


def test_bad_worker_options_are_refused_in_one_line(cli, env):
    result = cli("worker", "--concurrency", "0")
    assert result.exit_code == 2, result.output
    proc = spawn_cli(["worker"], {**env, "SIGNOFF_MODEL_CONCURRENCY": "lots"})
    assert proc.wait(30) == 2, proc.output
    assert "SIGNOFF_MODEL_CONCURRENCY" in proc.output and "Traceback" not in proc.output
