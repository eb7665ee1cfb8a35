"""What a worker's sweep picks up by itself, and what it leaves to a person: a run whose
process died is resumed; a run a person interrupted (Ctrl-C) is not."""

from __future__ import annotations

from langgraph.runtime import RunControl

from checkpoint import jobs, threads
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from tests.procs import wait_until
from tests.scripted import scripted_registry
from tests.test_worker_deadlines import TECHNICAL, clock, worker  # noqa: F401 - fixtures


def interrupted_after_first_node(pool, make_context, tid: str) -> None:
    """An inline run stopped at its first step boundary, as Ctrl-C stops it."""
    control = RunControl()

    def sink(event: dict) -> None:
        if event.get("event") == "node_end":
            control.request_drain("SIGINT")

    stop = ThreadRunner(pool, SUPPORT, make_context(scripted_registry(TECHNICAL))).start(tid, "The app crashes on start", {}, sink, control)
    assert stop.status == "interrupted"


def test_a_run_whose_process_died_is_resumed_and_an_interrupted_one_is_left_alone(pool, make_context, worker):
    interrupted_after_first_node(pool, make_context, "stopped")
    interrupted_after_first_node(pool, make_context, "died")
    with pool.connection() as conn:  # "died": as a SIGKILLed terminal leaves it, a while ago
        conn.execute("UPDATE threads SET status = 'running', updated_at = now() - interval '1 minute' WHERE thread_id = 'died'")
    wait_until(lambda: threads.get(pool, "died").status == "waiting" and jobs.active_job(pool, "died") is None,
               what="the worker to resume the dead run")
    sweeps = worker.sweeps
    wait_until(lambda: worker.sweeps >= sweeps + 3, what="three more sweeps")
    assert threads.get(pool, "stopped").status == "interrupted", "a person's Ctrl-C stands until `signoff resume`"
    with pool.connection() as conn:
        kinds = {r["thread_id"]: r["kind"] for r in conn.execute("SELECT thread_id, kind FROM jobs")}
    assert kinds == {"died": "recover"}
