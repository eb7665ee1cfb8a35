"""What LangGraph's HTTP API costs the database per request, on the real database in-process:
the round trips that decide how many clients one `signoff serve` keeps up with."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psycopg
import pytest
from psycopg._connection_base import BaseConnection

from checkpoint import tokens

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "purchasing"
LAPTOPS = {"request": "two laptops for new hires", "item": "laptop", "quantity": 2}


@pytest.fixture
def statements(monkeypatch) -> Counter[str]:
    """Every statement the process sends from now on, counted by its first words (BEGIN and
    COMMIT included)."""
    sent: Counter[str] = Counter()
    execute, command = psycopg.Cursor.execute, BaseConnection._exec_command

    def counted_execute(self, query, params=None, **kw):
        sent[" ".join(str(query).split()[:3])] += 1
        return execute(self, query, params, **kw)

    def counted_command(self, cmd, *args, **kw):
        sent[cmd.decode() if isinstance(cmd, bytes) else str(cmd)] += 1
        return command(self, cmd, *args, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    monkeypatch.setattr(BaseConnection, "_exec_command", counted_command)
    return sent


@pytest.fixture
def project(monkeypatch) -> None:
    monkeypatch.setenv("SIGNOFF_CONFIG", str(EXAMPLE / "langgraph.json"))


def test_a_token_used_again_within_a_minute_is_not_written_again(pool):
    token = tokens.create(pool, "alice")
    assert tokens.authenticate(pool, token).name == "alice"
    with pool.connection() as conn:
        first = conn.execute("SELECT xmin::text AS version, last_used_at FROM reviewer_tokens WHERE name = 'alice'").fetchone()
    assert first["last_used_at"] is not None
    assert tokens.authenticate(pool, token).name == "alice"
    with pool.connection() as conn:
        again = conn.execute("SELECT xmin::text AS version, last_used_at FROM reviewer_tokens WHERE name = 'alice'").fetchone()
    assert again == first  # neither the time nor the row was written: no row lock for concurrent requests to queue on


def test_creating_a_run_reads_where_its_thread_stands_once_and_stores_the_run_in_one_statement(pool, project, statements, monkeypatch):
    from web.langgraph_api import runs

    launched: Counter[str] = Counter()
    launch = runs.launch

    def counted_launch(*args, **kwargs):  # what starting the job costs is not the run's bookkeeping
        before = Counter(statements)
        try:
            return launch(*args, **kwargs)
        finally:
            launched.update(Counter(statements) - before)

    monkeypatch.setattr(runs, "launch", counted_launch)
    statements.clear()
    run = runs.create_run(pool, "alice", "t-costs", {"assistant_id": "purchase", "input": LAPTOPS, "if_not_exists": "create"})
    assert run["status"] == "pending" and run["thread_id"] == "t-costs"
    own = Counter(statements) - launched
    assert sum(own.values()) == 2, own  # one read of the thread's standing, one statement storing and returning the run
    with pool.connection() as conn:
        stored = conn.execute("SELECT r.status, r.job_id, a.metadata->>'graph_id' AS graph FROM api_runs r "
                              "JOIN api_threads a USING (thread_id) WHERE r.run_id = %s", (run["run_id"],)).fetchone()
    assert stored["status"] == "pending" and stored["job_id"] is not None and stored["graph"] == "purchase"


def test_the_results_runs_wait_returns_are_read_through_the_assistants_graph_bound_once(pool, project, monkeypatch):
    import asyncio

    import runtime.runs
    from web.langgraph_api import run_routes, runs

    bound = []
    bind = runtime.runs.bind
    monkeypatch.setattr(runtime.runs, "bind", lambda entry, p: bound.append(entry.name) or bind(entry, p))
    for tid in ("t-one", "t-two"):
        run = runs.create_run(pool, "alice", tid, {"assistant_id": "purchase", "input": LAPTOPS, "if_not_exists": "create"})
        assert asyncio.run(run_routes.outcome(pool, run)) == {}  # queued: nothing has run yet
    assert bound.count("purchase") == 1


def test_a_graphs_version_is_worked_out_once_for_all_the_threads_it_starts_and_resumes(project, monkeypatch):
    from runtime import versions
    from runtime.registry import get_entry

    import weakref

    monkeypatch.setattr(versions, "_fingerprints", weakref.WeakKeyDictionary(), raising=False)  # as in a new process
    walked = []
    structure = versions.structure
    monkeypatch.setattr(versions, "structure", lambda graph: walked.append(graph) or structure(graph))
    entry = get_entry("purchase")
    first = versions.version_of(entry)
    assert versions.version_of(get_entry("purchase")) == first
    assert walked.count(entry.graph) == 1  # (its subgraphs are walked with it)


def test_a_worker_job_reads_its_threads_row_once(pool, project, statements):
    from runtime.worker_runs import worker_runner
    from web.langgraph_api import runs

    runs.create_run(pool, "alice", "t-row", {"assistant_id": "purchase", "input": LAPTOPS, "if_not_exists": "create"})

    class Job:  # what the claim hands the worker
        thread_id, graph = "t-row", "purchase"

    runner = worker_runner(Job(), pool, None, type("Graphs", (), {"get": staticmethod(lambda name: None)})(), None, None, False)
    statements.clear()
    rows = [runner.thread_row("t-row") for _ in range(3)]  # version check, run options, settling
    assert rows[0].graph == "purchase" and rows[0] == rows[1] == rows[2]
    assert statements["SELECT * FROM"] == 1


def test_an_assistant_is_looked_up_among_the_projects_graphs_once(project, monkeypatch):
    from web.langgraph_api import assistants

    monkeypatch.setattr(assistants, "_found", {}, raising=False)  # as in a new process
    listed = []
    project_graphs = assistants.project_graphs
    monkeypatch.setattr(assistants, "project_graphs", lambda: listed.append(1) or project_graphs())
    first = assistants.entry_for("purchase")
    assert assistants.entry_for("purchase") is first
    by_id = assistants.entry_for(assistants.assistant_id("purchase"))
    assert by_id.name == "purchase" and assistants.entry_for(assistants.assistant_id("purchase")) is by_id
    assert len(listed) == 2  # once by name, once by id


def test_a_resume_reads_the_threads_row_and_checkpoint_once_and_records_its_decision_and_job_in_one_transaction(
        pool, project, make_context, statements):
    from runtime.registry import get_entry
    from runtime.runner import InterruptRunner
    from web.langgraph_api import runs

    entry = get_entry("purchase")
    InterruptRunner(pool, entry, make_context(None)).start_thread("t-resume", LAPTOPS, {}, "laptops", deadline_hours=8, actor="alice",
                                                                   sink=lambda event: None)
    opts = {"command": {"resume": [{"type": "accept", "args": None}]}, "interrupt_before": None, "interrupt_after": None,
            "context": None, "config": None}
    statements.clear()
    job, checkpoint, waiting = runs.launch(pool, "t-resume", entry, opts, "bob")
    assert not waiting and job is not None
    assert statements["SELECT * FROM"] == 1  # the thread's row
    loads = sum(n for words, n in statements.items() if words.startswith("select thread_id, checkpoint,"))
    assert loads == 1  # one checkpoint loaded: the decider's view, checked still the newest by its id alone
    assert statements["COMMIT"] == 1  # the decision, its audit row and the job that runs the thread on, together
    # the row, the checkpoint, the answers already given; then under the row lock: BEGIN, the lock, the newest checkpoint
    # with the answers again in one, the approval chain's four reads (its stage, the requester, the stage's detail, the
    # policy), the decision (a savepoint, two inserts), the job and its wake-up, COMMIT
    assert sum(statements.values()) == 17, " | ".join(statements)
    with pool.connection() as conn:
        decided = conn.execute("SELECT decision, actor, checkpoint_id FROM approvals WHERE thread_id = 't-resume'").fetchone()
        queued = conn.execute("SELECT id, kind FROM jobs WHERE thread_id = 't-resume' AND status = 'todo'").fetchone()
    assert decided["decision"] == "approved" and decided["actor"] == "bob" and decided["checkpoint_id"].startswith(checkpoint)
    assert queued["id"] == job and queued["kind"] == "decision"


def test_a_graphs_input_types_are_made_into_validators_once_for_all_the_threads_it_starts(project, monkeypatch):
    import pydantic

    from runtime import starting
    from runtime.registry import get_entry

    if hasattr(starting, "_validator"):
        starting._validator.cache_clear()  # as in a new process
    built = []
    adapter = pydantic.TypeAdapter
    monkeypatch.setattr(pydantic, "TypeAdapter", lambda tp, *a, **kw: built.append(tp) or adapter(tp, *a, **kw))
    entry = get_entry("purchase")
    for _ in range(3):
        starting.check_input("purchase", entry.graph, LAPTOPS)
    assert built and len(built) == len(set(map(repr, built)))  # one validator per input type, not one per start
    with pytest.raises(Exception, match="quantity"):
        starting.check_input("purchase", entry.graph, {**LAPTOPS, "quantity": "many"})  # and each still validates
