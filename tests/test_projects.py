"""A LangGraph project written without Signoff (examples/purchasing: its own pyproject.toml and
langgraph.json, several graphs, one that cannot import here) runs from its own folder through
the real CLI and real workers: graphs, start --input, pending, show, approve, reject, answer,
interrupt points, several interrupts decided one by one, SIGKILL + recover, graph versions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import count_rows
from tests.procs import ROOT, CliProcess, StatementBlock, process_env, wait_until

EXAMPLE = ROOT / "examples" / "purchasing"
LAPTOPS = '{"request": "two laptops for new hires", "item": "laptop", "quantity": 2}'


@pytest.fixture
def penv(env: dict[str, str], pool) -> dict[str, str]:
    """The CLI's environment for the project: this test's database, the worktree importable;
    decisions are made by "reviewer", through a reviewer token of theirs."""
    from checkpoint import tokens

    _REVIEWER_TOKENS[env["DATABASE_URL"]] = tokens.create(pool, "reviewer")
    return {**env, "PYTHONPATH": str(ROOT)}


#: who decides: "reviewer", never the requester (the OS login that starts threads), whom an
#: approval chain would refuse; one token per test database
_REVIEWER_TOKENS: dict[str, str] = {}


def reviewer_env(penv: dict[str, str]) -> dict[str, str]:
    return {"SIGNOFF_TOKEN": _REVIEWER_TOKENS[penv["DATABASE_URL"]]}


def cli(penv: dict[str, str], *args: str, cwd: Path = EXAMPLE, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    who = reviewer_env(penv) if args and args[0] in ("approve", "reject", "answer") else {}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=process_env({**penv, **who, **(extra or {})}),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def show(penv: dict[str, str], thread: str, **kw: Any) -> dict[str, Any]:
    done = cli(penv, "show", thread, "--json", **kw)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def spawn(penv: dict[str, str], *args: str, cwd: Path = EXAMPLE) -> CliProcess:
    popen = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=process_env(penv), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    return CliProcess(popen)


@pytest.fixture
def workers(penv: dict[str, str]):
    started: list[CliProcess] = []

    def start(cwd: Path = EXAMPLE) -> CliProcess:
        proc = spawn(penv, "worker", cwd=cwd)
        started.append(proc)
        proc.wait_for(r"worker \d+ started", timeout=60)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.kill()


def waiting(penv: dict[str, str], *args: str) -> dict[str, Any]:
    done = cli(penv, "start", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    thread = args[args.index("--thread") + 1]
    view = show(penv, thread)
    assert view["status"] == "waiting", view
    return view


def test_graphs_lists_the_project_graphs_and_the_one_that_cannot_import(penv):
    done = cli(penv, "graphs", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["graphs"]}
    assert {"support", "revision", "research", "purchase", "bulk", "intake", "forecast"} <= set(rows)
    assert rows["purchase"]["input"] == ["request", "item", "quantity"] and rows["purchase"]["version"] and rows["purchase"]["error"] is None
    assert rows["forecast"]["error"].startswith("ModuleNotFoundError") and rows["forecast"]["version"] is None
    assert rows["support"]["gates"]["before"] == ["review"]


def test_agent_inbox_request_from_a_subgraph_is_shown_with_its_action_and_args(penv):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1")
    [asked] = view["pending"]
    assert asked["kind"] == "inbox" and asked["node"] == "approval"
    assert asked["actions"][0]["action"] == "place_order" and asked["actions"][0]["args"]["total_cents"] == 240000
    listed = json.loads(cli(penv, "pending", "--json").stdout)["threads"]
    assert [(t["thread_id"], t["digest"]) for t in listed] == [("p1", view["digest"])]
    assert "place_order" in listed[0]["summary"] and "240000" in listed[0]["summary"]


def test_approve_accepts_the_request_and_the_order_is_stored(penv, pool):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1")
    done = cli(penv, "approve", "p1", "--expect", view["digest"])
    assert done.returncode == 0, done.stderr
    assert "ordered 2 x laptop for 2400.00 EUR" in done.stdout
    assert count_rows(pool, "store", prefix="orders") == 1
    assert show(penv, "p1")["decisions"][0]["decision"] == "approved"


def test_approve_with_args_resumes_with_the_edited_action(penv):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1")
    edited = '{"item": "laptop", "quantity": 1, "total_cents": 120000, "currency": "EUR", "supplier": "refurb"}'
    done = cli(penv, "approve", "p1", "--expect", view["digest"], "--args", edited)
    assert done.returncode == 0, done.stderr
    assert show(penv, "p1")["values"]["outcome"] == "ordered 1 x laptop for 1200.00 EUR"


def test_reject_with_feedback_answers_the_request_with_a_response(penv, pool):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1")
    done = cli(penv, "reject", "p1", "--feedback", "buy refurbished", "--expect", view["digest"])
    assert done.returncode == 0, done.stderr
    assert show(penv, "p1")["values"]["outcome"] == "not ordered: buy refurbished"
    assert count_rows(pool, "store", prefix="orders") == 0


def test_an_answer_the_request_does_not_allow_is_refused_and_nothing_is_recorded(penv, pool):
    waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1")
    done = cli(penv, "reject", "p1", "--ignore")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "does not allow 'ignore'" in done.stderr
    assert count_rows(pool, "approvals") == 0 and show(penv, "p1")["status"] == "waiting"


def test_input_that_does_not_fit_the_schema_is_refused_and_nothing_is_stored(penv, pool):
    done = cli(penv, "start", "purchase", "--input", '{"request": "x", "item": "laptop", "quantity": "many"}', "--thread", "bad")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "quantity" in done.stderr
    assert count_rows(pool, "threads") == 0


def test_interrupt_before_pauses_at_the_node_and_a_rejection_stops_there(penv, pool):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "p1", "--interrupt-before", "place_order")
    assert cli(penv, "approve", "p1", "--expect", view["digest"]).returncode == 0
    paused = show(penv, "p1")
    assert paused["status"] == "waiting" and [p["id"] for p in paused["pending"]] == ["before:place_order"]
    done = cli(penv, "reject", "p1", "--feedback", "budget frozen", "--expect", paused["digest"])
    assert done.returncode == 0, done.stderr
    assert show(penv, "p1")["status"] == "finished" and count_rows(pool, "store", prefix="orders") == 0


def test_async_graph_compiled_without_checkpointer_takes_a_value_answer(penv):
    view = waiting(penv, "intake", "--input", '{"request": "three monitors"}', "--thread", "i1")
    assert view["values"]["category"] == "hardware" and view["pending"][0]["kind"] == "value"
    refused = cli(penv, "approve", "i1", "--expect", view["digest"])
    assert refused.returncode == 2 and "signoff answer" in refused.stderr
    done = cli(penv, "answer", "i1", "--value", "50000", "--expect", view["digest"])
    assert done.returncode == 0, done.stderr
    assert show(penv, "i1")["values"]["budget_cents"] == 50000


def test_several_interrupts_from_parallel_branches_are_decided_one_by_one(penv):
    lines = '{"lines": [{"item": "chair", "quantity": 2}, {"item": "desk", "quantity": 1}]}'
    view = waiting(penv, "bulk", "--input", lines, "--thread", "b1")
    first, second = view["pending"]
    assert cli(penv, "approve", "b1", "--expect", view["digest"]).returncode == 2  # which one?
    assert cli(penv, "approve", "b1", "--expect", view["digest"], "--interrupt", first["id"]).returncode == 0
    after = show(penv, "b1")
    assert after["status"] == "waiting" and [p["id"] for p in after["pending"]] == [second["id"]]
    assert cli(penv, "reject", "b1", "--ignore", "--expect", after["digest"]).returncode == 0
    final = show(penv, "b1")
    assert final["status"] == "finished" and final["values"]["ordered"] == ["2 x chair"]


def test_worker_runs_a_detached_project_thread_through_its_gate(penv, workers):
    workers()
    assert cli(penv, "start", "purchase", "--input", LAPTOPS, "--thread", "w1", "--detach").returncode == 0
    view = wait_until(lambda: (v := show(penv, "w1"))["status"] == "waiting" and v, what="w1 at its gate")
    done = cli(penv, "approve", "w1", "--expect", view["digest"])
    assert done.returncode == 0 and "handed to a worker" in done.stdout, done.stderr
    assert show(penv, "w1")["values"]["outcome"].startswith("ordered 2 x laptop")


def test_a_worker_for_a_project_runs_its_threads_without_signoffs_own_model(penv):
    """A model whose weights are not installed: Signoff's own graphs would need it, the
    project's graphs do not, so the worker starts and runs them."""
    proc = spawn({**penv, "SIGNOFF_MODEL": "local:1.5b"}, "worker")
    try:
        proc.wait_for(r"worker \d+ started", timeout=60)
        assert cli(penv, "start", "purchase", "--input", LAPTOPS, "--thread", "m1", "--detach").returncode == 0
        assert wait_until(lambda: show(penv, "m1")["status"] == "waiting", what="m1 at its gate")
    finally:
        proc.kill()


def test_a_worker_killed_mid_run_is_recovered_and_the_order_is_placed_once(penv, pool, database_url, workers):
    worker = workers()
    assert cli(penv, "start", "purchase", "--input", LAPTOPS, "--thread", "k1", "--detach").returncode == 0
    view = wait_until(lambda: (v := show(penv, "k1"))["status"] == "waiting" and v, what="k1 at its gate")
    block = StatementBlock(database_url)
    try:
        block.arm("store", "INSERT")  # the order's write waits: the worker is mid-run in place_order
        assert cli(penv, "approve", "k1", "--expect", view["digest"], "--detach").returncode == 0
        held = block.wait_blocked()
        worker.kill()
        block.terminate(held["pid"])  # the order's write never lands
    finally:
        block.close()
    done = cli(penv, "recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recovering k1" in done.stdout
    assert show(penv, "k1")["values"]["outcome"].startswith("ordered 2 x laptop")
    assert count_rows(pool, "store", prefix="orders") == 1


def test_a_thread_whose_graph_is_not_here_is_set_aside_then_runs_once_it_is(penv, pool, workers, tmp_path):
    assert cli(penv, "start", "purchase", "--input", LAPTOPS, "--thread", "u1", "--detach").returncode == 0
    elsewhere = workers(cwd=tmp_path)  # no langgraph.json there: the graph is unknown to this worker
    wait_until(lambda: count_rows(pool, "jobs", status="failed") == 1, what="the job closed as failed")
    with pool.connection() as conn:
        row = conn.execute("SELECT status, graph_error FROM threads WHERE thread_id = 'u1'").fetchone()
    assert row["status"] == "queued" and "purchase" in row["graph_error"]
    assert count_rows(pool, "jobs", status="doing") == 0
    listing = cli(penv, "pending", cwd=tmp_path)
    assert "cannot run u1" in listing.stdout
    assert "cannot run here" in cli(penv, "show", "u1", cwd=tmp_path).stdout
    assert "cannot run u1" in cli(penv, "workers", cwd=tmp_path).stdout
    swept = elsewhere_sweeps(pool)
    wait_until(lambda: elsewhere_sweeps(pool) >= swept + 3, what="three more sweeps")
    assert count_rows(pool, "jobs") == 1  # no requeue loop
    elsewhere.kill()
    workers()  # in the project's folder: the graph loads, the thread runs
    assert wait_until(lambda: show(penv, "u1")["status"] == "waiting", what="u1 run once its graph is back")


def elsewhere_sweeps(pool: Any) -> int:
    """The live worker's heartbeats so far (one a second, like its sweeps)."""
    with pool.connection() as conn:
        row = conn.execute("SELECT coalesce(max(extract(epoch FROM heartbeat_at - started_at)), 0) AS s FROM workers").fetchone()
    return int(row["s"])


def versioned_copy(tmp_path: Path, change: str) -> Path:
    """The example project as a later deploy changed it."""
    copy = tmp_path / "deployed"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "purchasing" / "purchase.py"
    text = source.read_text()
    if change == "remove approval":
        text = text.replace('builder.add_node("approval", approval)\n', "").replace('builder.add_edge("quote", "approval")\n', 'builder.add_edge("quote", "place_order")\n').replace('builder.add_edge("approval", "place_order")\n', "")
    else:
        text = text.replace('builder.add_node("place_order", place_order)\n', 'builder.add_node("place_order", place_order)\nbuilder.add_node("audit", lambda state: {})\n')
    source.write_text(text)
    return copy


def test_a_deploy_that_removes_a_waiting_threads_gate_is_caught_and_its_resume_refused(penv, tmp_path):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "v1")
    deployed = versioned_copy(tmp_path, "remove approval")
    check = cli(penv, "graphs", "check", "--json", cwd=deployed)
    assert check.returncode == 1, check.stdout + check.stderr
    [row] = json.loads(check.stdout)["cannot_resume"]
    assert row["thread_id"] == "v1" and "approval" in row["reason"] and row["version"] == view["version"]
    refused = cli(penv, "approve", "v1", "--expect", view["digest"], cwd=deployed)
    assert refused.returncode == 4 and len(refused.stderr.strip().splitlines()) == 1
    assert view["version"] in refused.stderr and row["version_now"] in refused.stderr
    assert show(penv, "v1")["status"] == "waiting" and show(penv, "v1")["decisions"] == []


def test_a_compatible_deploy_resumes_the_waiting_thread(penv, tmp_path):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "v1")
    deployed = versioned_copy(tmp_path, "add a node")
    check = cli(penv, "graphs", "check", cwd=deployed)
    assert check.returncode == 0, check.stdout + check.stderr
    done = cli(penv, "approve", "v1", "--expect", view["digest"], cwd=deployed)
    assert done.returncode == 0, done.stderr
    assert "ordered 2 x laptop" in done.stdout


HITL_GRAPH = '''
from typing_extensions import TypedDict
from langgraph.graph import StateGraph, START
from langgraph.types import interrupt

class S(TypedDict, total=False):
    query: str
    result: str

def run_sql(state):
    request = {"action_requests": [{"name": "execute_sql", "args": {"query": state["query"]}, "description": "runs SQL"}],
               "review_configs": [{"action_name": "execute_sql", "allowed_decisions": ["approve", "reject"]}]}
    decision = interrupt(request)["decisions"][0]
    return {"result": decision["type"] + ":" + decision.get("message", "")}

graph = StateGraph(S).add_node("run_sql", run_sql).add_edge(START, "run_sql").compile()
'''


def test_human_in_the_loop_middleware_requests_take_decisions_and_refuse_edits(penv, tmp_path):
    (tmp_path / "agent.py").write_text(HITL_GRAPH)
    (tmp_path / "langgraph.json").write_text('{"graphs": {"sql": "./agent.py:graph"}}')
    done = cli(penv, "start", "sql", "--input", '{"query": "DELETE FROM users"}', "--thread", "h1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    view = show(penv, "h1", cwd=tmp_path)
    assert view["pending"][0]["kind"] == "hitl" and view["pending"][0]["actions"][0]["allowed"] == ["approve", "reject"]
    edit = cli(penv, "approve", "h1", "--expect", view["digest"], "--args", '{"query": "SELECT 1"}', cwd=tmp_path)
    assert edit.returncode == 2 and "does not allow 'edit'" in edit.stderr
    done = cli(penv, "reject", "h1", "--feedback", "never delete users", "--expect", view["digest"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert show(penv, "h1", cwd=tmp_path)["values"]["result"] == "reject:never delete users"


CONTEXT_GRAPH = '''
from dataclasses import dataclass
from typing_extensions import TypedDict
from langgraph.graph import StateGraph, START
from langgraph.runtime import Runtime
from langgraph.types import interrupt

@dataclass
class Ctx:
    team: str

class S(TypedDict, total=False):
    topic: str
    lines: list

def first(state, runtime: Runtime[Ctx]):
    return {"lines": [runtime.context.team + " asked"]}

def second(state, runtime: Runtime[Ctx]):
    reply = interrupt("go on?")
    return {"lines": state["lines"] + [runtime.context.team + " " + reply]}

graph = (StateGraph(S, context_schema=Ctx).add_node("first", first).add_node("second", second)
         .add_edge(START, "first").add_edge("first", "second").compile())
'''


def test_context_is_given_to_every_run_of_the_thread(penv, tmp_path):
    (tmp_path / "ctx.py").write_text(CONTEXT_GRAPH)
    (tmp_path / "langgraph.json").write_text('{"graphs": {"ctx": "./ctx.py:graph"}}')
    done = cli(penv, "start", "ctx", "--input", '{"topic": "t"}', "--context", '{"team": "ops"}', "--thread", "c1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    view = show(penv, "c1", cwd=tmp_path)
    done = cli(penv, "answer", "c1", "--value", '"resumed"', "--expect", view["digest"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert show(penv, "c1", cwd=tmp_path)["values"]["lines"] == ["ops asked", "ops resumed"]


def test_an_amount_the_graph_declares_goes_through_its_approval_chain(penv, pool, tmp_path):
    policy = tmp_path / "signoff.toml"
    policy.write_text('currency = "EUR"\n[roles]\nfinance = ["carol", "dave"]\nsupport-lead = ["carol"]\n'
                      '[gates."purchase.approval"]\nstages = [{ role = "finance", above = 1000, quorum = 2 }]\n')
    assert cli(penv, "policy", "load", str(policy)).returncode == 0  # the OS login administers before a policy names admins
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "a1")  # 2400.00 EUR under review
    from checkpoint import tokens

    done = cli(penv, "approve", "a1", "--expect", view["digest"], extra={"SIGNOFF_TOKEN": tokens.create(pool, "carol")})
    assert done.returncode == 0, done.stderr
    assert count_rows(pool, "stage_approvals", thread_id="a1") == 1 and count_rows(pool, "approvals") == 0
    assert show(penv, "a1")["status"] == "waiting" and count_rows(pool, "store", prefix="orders") == 0


def test_a_project_gate_past_its_deadline_gets_its_default_answer(penv, pool):
    waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "d1", "--deadline", "0.0002")  # under a second
    def due() -> bool:
        with pool.connection() as conn:
            return conn.execute("SELECT now() > deadline AS due FROM threads WHERE thread_id = 'd1'").fetchone()["due"]

    wait_until(due, what="the deadline to pass")
    done = cli(penv, "expire")
    assert done.returncode == 0, done.stdout + done.stderr
    view = show(penv, "d1")
    assert view["values"]["outcome"] == "not ordered: the review deadline passed"  # ignore is not allowed: a response
    assert view["decisions"][0]["decision"] == "expired" and count_rows(pool, "store", prefix="orders") == 0


def test_show_cuts_large_state_values_with_a_note(penv):
    request = "please buy " + "x" * 3000
    view = waiting(penv, "purchase", "--input", json.dumps({"request": request, "item": "chair", "quantity": 1}), "--thread", "s1")
    assert len(view["values"]["request"]) == 2000 and view["truncated"] == [{"key": "request", "chars": len(json.dumps(request))}]
    assert view["values"]["item"] == "chair"


def test_an_approve_killed_mid_run_is_finished_by_a_worker_with_the_recorded_answer(penv, pool, database_url, workers):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "r1")
    block = StatementBlock(database_url)
    try:
        block.arm("store", "INSERT")
        approving = spawn({**penv, **reviewer_env(penv)}, "approve", "r1", "--expect", view["digest"], "--args",
                          '{"item": "laptop", "quantity": 1, "total_cents": 120000, "currency": "EUR", "supplier": "refurb"}')
        held = block.wait_blocked()
        approving.kill()  # SIGKILL: the answer is recorded, the order not yet written
        block.terminate(held["pid"])
    finally:
        block.close()
    assert count_rows(pool, "approvals", thread_id="r1") == 1 and count_rows(pool, "store", prefix="orders") == 0
    workers()
    assert wait_until(lambda: show(penv, "r1")["status"] == "finished", what="a worker to finish r1")
    assert show(penv, "r1")["values"]["outcome"] == "ordered 1 x laptop for 1200.00 EUR"  # the edited answer, as recorded
    assert count_rows(pool, "store", prefix="orders") == 1


def test_the_http_api_approves_a_project_thread_on_the_digest_of_its_interrupt(penv, pool, monkeypatch):
    from starlette.testclient import TestClient

    from checkpoint import jobs, tokens
    from web.app import WebContext, create_app

    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "x1")
    monkeypatch.setenv("SIGNOFF_CONFIG", str(EXAMPLE / "langgraph.json"))
    token = tokens.create(pool, "Alice Lead")
    with TestClient(create_app(WebContext(pool=pool, key=b"k" * 40, public_url="http://127.0.0.1:8321")), base_url="http://127.0.0.1") as client:
        shown = client.get("/api/threads/x1", headers={"Authorization": f"Bearer {token}"})
        assert shown.status_code == 200, shown.text
        assert shown.json()["digest"] == view["digest"] and "place_order" in shown.json()["review"]  # what the reviewer sees
        response = client.post("/api/threads/x1/approve", json={"expect": view["digest"]}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    assert jobs.active_job(pool, "x1")["kind"] == "decision"
    with pool.connection() as conn:
        decided = conn.execute("SELECT actor, decision, answer FROM approvals WHERE thread_id = 'x1'").fetchone()
    assert decided == {"actor": "Alice Lead", "decision": "approved", "answer": [{"type": "accept", "args": None}]}


MODEL_GRAPH = '''
import os
from typing_extensions import TypedDict
from langchain_openai import ChatOpenAI
from langgraph.graph import StateGraph, START

class S(TypedDict, total=False):
    topic: str
    poem: str

def writer(state):
    model = ChatOpenAI(model="test-model", base_url=os.environ["OPENAI_BASE_URL"], api_key="k", streaming=True)
    return {"poem": model.invoke("Write a haiku about " + state["topic"]).content}

graph = StateGraph(S).add_node("writer", writer).add_edge(START, "writer").compile()
'''


def test_tokens_of_a_chat_model_in_a_project_node_stream_to_the_terminal_and_to_watch(penv, server, tmp_path):
    from tests.fault_server import ok

    server.rule("Write a haiku", ok("quiet disks spinning"))
    (tmp_path / "poet.py").write_text(MODEL_GRAPH)
    (tmp_path / "langgraph.json").write_text('{"graphs": {"poet": "./poet.py:graph"}}')
    done = cli(penv, "start", "poet", "--input", '{"topic": "storage"}', "--thread", "m1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "writer >" in done.stdout and "quiet disks spinning" in done.stdout
    watched = cli(penv, "watch", "m1", cwd=tmp_path)
    assert "quiet disks spinning" in watched.stdout and "finished" in watched.stdout


def test_approve_edit_opens_the_actions_arguments_in_the_editor(penv, tmp_path):
    waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "e1")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf '%s' '{\"item\": \"laptop\", \"quantity\": 1, \"total_cents\": 120000, \"currency\": \"EUR\", "
                      "\"supplier\": \"refurb\"}' > \"$1\"\n")
    editor.chmod(0o755)
    done = cli(penv, "approve", "e1", "--edit", extra={"EDITOR": str(editor)})
    assert done.returncode == 0, done.stderr
    assert show(penv, "e1")["values"]["outcome"] == "ordered 1 x laptop for 1200.00 EUR"


def test_interrupt_after_pauses_once_the_node_ran(penv):
    view = waiting(penv, "purchase", "--input", LAPTOPS, "--thread", "f1", "--interrupt-after", "quote")
    assert [p["id"] for p in view["pending"]] == ["after:quote"] and view["values"]["total_cents"] == 240000
    assert cli(penv, "approve", "f1", "--expect", view["digest"]).returncode == 0
    assert show(penv, "f1")["pending"][0]["kind"] == "inbox"  # ran on to the approval request
