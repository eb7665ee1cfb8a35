"""Workers die and drain; no thread is lost, none runs twice, no side effect is doubled.

- SIGKILL a worker inside a node of each graph (the kill-at-every-point scenarios of
  test_crash_recovery): a second worker takes the thread over by itself within the
  documented bound and finishes every phase, with exactly one of each side effect.
- SIGTERM drains: the running thread stops at its next step boundary, its job goes back to
  the queue, the worker exits 0; a restarted worker resumes it without redoing the step.
- A second signal exits at once; the next worker still finishes the thread.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from checkpoint import events, jobs, threads
from graphs.registry import get_spec
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows
from tests.fault_server import held, ok
from tests.scripted import CANNOT_ANSWER
from tests.procs import StatementBlock, wait_until
from tests.test_crash_recovery import BY_NAME, SCENARIOS, Drive, Phase, Scenario
from tests.test_crash_recovery import provider  # noqa: F401 - fixture (the refund scenarios' payment provider)
from tests.worker_procs import submit, workers  # noqa: F401 - fixture

#: docs/operations.md, "Workers on several machines": a SIGKILLed worker's threads are running elsewhere within this.
HANDOVER_BOUND_SECONDS = 10.0


@pytest.fixture
def env(env: dict[str, str], provider) -> dict[str, str]:
    return {**env, "SIGNOFF_MAX_ATTEMPTS": "2", "SIGNOFF_PAYMENTS_URL": provider.url, "SIGNOFF_PAYMENTS_TIMEOUT": "0.5"}


def argv(phase: Phase, tid: str, out: Path) -> list[str]:
    """The phase's command line (a digest, if asked for, is not needed by a hand-over)."""
    return [a.format(tid=tid, out=out, digest="") for a in phase.args]


def options_of(phase: Phase, tid: str, out: Path) -> tuple[str, dict[str, str]]:
    """The text and options of a `start` phase, as `start ... --detach` would submit them."""
    args = argv(phase, tid, out)
    text, rest = args[2], args[3:]
    flags = dict(zip(rest[::2], rest[1::2]))
    options = {"email": flags.get("--email"), "out_dir": flags.get("--out")}
    return text, {k: v for k, v in options.items() if v}


def settled(pool, tid: str) -> bool:
    row = threads.get(pool, tid)
    return row is not None and row.status in ("waiting", "finished") and jobs.active_job(pool, tid) is None


def hand_over(run: Drive, phase: Phase) -> None:
    """Do what the phase's command does when a worker runs: submit, decide, or let the
    deadline pass (the worker's sweep expires it)."""
    if phase.verb == "start":
        text, options = options_of(phase, run.tid, run.out)
        submit(run.pool, run.s.graph, run.tid, text, **options)
    elif phase.verb in ("approve", "reject"):
        args = argv(phase, run.tid, run.out)
        note = args[args.index("--feedback") + 1] if "--feedback" in args else ""
        ThreadRunner(run.pool, get_spec(run.s.graph)).decide(run.tid, phase.decision, actor=phase.by, note=note)  # type: ignore[arg-type]
        jobs.enqueue(run.pool, run.tid, "decision")
    else:
        run.prepare(phase)  # the deadline in the past: the running worker's sweep fires it


def first_model_node(scenario: Scenario) -> tuple[int, str]:
    for index, phase in enumerate(scenario.phases):
        for node in phase.nodes:
            if node in scenario.model_nodes and node != phase.nodes[0]:
                return index, node
    raise AssertionError(f"{scenario.name}: no model node after the first node")


def run_started_by(pool, tid: str, worker_id: int) -> bool:
    return any(e.event.get("event") == "run_started" and e.event.get("worker") == worker_id for e in events.read_since(pool, tid))


def worker_id_of(proc) -> int:
    return int(proc.wait_for(r"worker (\d+) started")[1])


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_a_worker_killed_inside_a_node_is_replaced_and_every_side_effect_happens_once(name, pool, database_url, server, workers, tmp_path, provider):
    run = Drive(BY_NAME[name], None, pool, database_url, server, tmp_path / "out", provider)
    kill_phase, node = first_model_node(run.s)
    needle = run.s.model_nodes[node]
    release = threading.Event()
    first = workers("--concurrency", "2")
    try:
        for index, phase in enumerate(run.s.phases):
            if index == kill_phase:
                seen = server.matching(needle)
                server.once(needle, held(release))
            decided = run.approvals()
            hand_over(run, phase)
            if phase.decision:  # an expiry is recorded by the worker's sweep, a moment later
                wait_until(lambda: run.approvals() > decided, timeout=30, what=f"the {phase.decision} decision")
            if index == kill_phase:
                wait_until(lambda: server.matching(needle) > seen, what=f"the {node} model request")
                second = workers("--concurrency", "2")
                second_id = worker_id_of(second)
                killed_at = time.monotonic()
                assert first.kill() == -signal.SIGKILL
                release.set()  # the dead worker's request answers into a closed socket
                wait_until(lambda: run_started_by(pool, run.tid, second_id), timeout=HANDOVER_BOUND_SECONDS, what="the second worker to take over")
                handover = time.monotonic() - killed_at
                assert handover < HANDOVER_BOUND_SECONDS
            wait_until(lambda: settled(pool, run.tid), timeout=60, what=f"phase {phase.verb} to settle")
    finally:
        release.set()
    run.assert_finished_once()
    with psycopg.connect(database_url) as conn:
        recovered = conn.execute("SELECT recoveries FROM jobs WHERE thread_id = %s AND recoveries > 0", (run.tid,)).fetchall()
    assert recovered == [(1,)], "exactly the killed job was handed over, once"


# --- drain -------------------------------------------------------------------------------------


@pytest.fixture
def scripted(server):
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    return server


def test_sigterm_drains_at_the_next_step_boundary_and_a_restarted_worker_resumes(scripted, pool, workers):
    release = threading.Event()
    scripted.once("Classify the customer message", held(release))
    worker = workers()
    submit(pool, "support", "d1", "The sync engine corrupts my notes")
    try:
        wait_until(lambda: scripted.matching("Classify the customer message"), what="the classify request")
        worker.send(signal.SIGTERM)
        worker.wait_for("draining")
        release.set()
        assert worker.wait(30) == 0, worker.output
    finally:
        release.set()
    assert threads.get(pool, "d1").status == "interrupted"
    assert count_rows(pool, "jobs", thread_id="d1", status="todo") == 1, "the drained job waits for the next worker"
    assert count_rows(pool, "workers") == 0, "a drained worker removes itself"
    assert count_rows(pool, "tickets", thread_id="d1") == 0, "stopped before escalate"

    workers()
    wait_until(lambda: settled(pool, "d1"), timeout=30, what="the restarted worker to resume d1")
    assert threads.get(pool, "d1").status == "waiting"
    assert scripted.matching("Classify the customer message") == 1, "the step saved before the drain is not run again"
    assert count_rows(pool, "tickets", thread_id="d1") == 1


def test_a_second_signal_exits_at_once_and_the_next_worker_finishes_the_thread(scripted, pool, workers):
    release = threading.Event()
    scripted.once("Classify the customer message", held(release))
    worker = workers()
    submit(pool, "support", "d2", "The sync engine corrupts my notes")
    try:
        wait_until(lambda: scripted.matching("Classify the customer message"), what="the classify request")
        worker.send(signal.SIGTERM)
        worker.wait_for("draining")
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 130, worker.output
    finally:
        release.set()
    workers()
    wait_until(lambda: settled(pool, "d2"), timeout=30, what="the next worker to finish d2")
    assert threads.get(pool, "d2").status == "waiting"
    assert count_rows(pool, "tickets", thread_id="d2") == 1


def test_a_worker_never_takes_a_thread_a_terminal_is_running(scripted, pool, workers, env):
    """The claim is one invariant for terminals and workers: a queued job for a thread that an
    inline run holds is left alone (and no step runs twice)."""
    from tests.procs import spawn_cli

    release = threading.Event()
    scripted.once("Classify the customer message", held(release))
    inline = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "i1"], env)
    try:
        wait_until(lambda: scripted.matching("Classify the customer message"), what="the inline classify request")
        jobs.enqueue(pool, "i1", "recover")  # as if someone handed the thread to the workers
        workers()
        wait_until(lambda: jobs.active_job(pool, "i1") is None, timeout=30, what="the worker to see the thread is busy")
        release.set()
        assert inline.wait(30) == 0, inline.output
    finally:
        release.set()
        inline.kill()
    assert scripted.matching("Classify the customer message") == 1
    assert count_rows(pool, "tickets", thread_id="i1") == 1
    assert threads.get(pool, "i1").status == "waiting"
