"""The rest of a run request over LangGraph's HTTP API, with LangGraph's own client against a
real `signoff serve` and worker: command.goto/update (an audited act of a gate's reviewer,
never past a sign-off), the run's config reaching the graph, on_completion, errors in
LangGraph's shape, and run creation that never holds two pooled connections at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client

from checkpoint.audit import events_of
from tests.conftest import count_rows
from tests.procs import table_counts, wait_until
from tests.test_langgraph_sdk import (EXAMPLE, LAPTOPS, alice, bob, penv, procs, serve, serve_with_worker,  # noqa: F401
                                      worker)

ACCEPT = [{"type": "accept", "args": None}]

ECHO = '''
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    text: str
    x: str
    thread: str
    tags: list


def echo(state: State, config: RunnableConfig) -> dict:
    given = config["configurable"]
    return {"x": given.get("x"), "thread": given.get("thread_id"), "tags": list(config.get("tags") or [])}


graph = StateGraph(State).add_node("echo", echo).add_edge(START, "echo").add_edge("echo", END).compile()
'''


@pytest.fixture
def echo_serve(tmp_path: Path, penv: dict[str, str], procs) -> str:
    """serve and a worker for a project whose graph writes what its config carries into its state."""
    (tmp_path / "echo.py").write_text(ECHO)
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"echo": "./echo.py:graph"}}))
    return serve_with_worker(penv, procs, tmp_path)


def decided_purchase(serve: str, alice: str, bob: str) -> str:
    """A purchase thread alice requested and bob declined: finished, waiting for nothing."""
    thread = get_sync_client(url=serve, api_key=alice).threads.create()["thread_id"]
    get_sync_client(url=serve, api_key=alice).runs.wait(thread, "purchase", input=LAPTOPS)
    done = get_sync_client(url=serve, api_key=bob).runs.wait(thread, "purchase", command={"resume": [{"type": "response", "args": "no"}]})
    assert done["outcome"] == "not ordered: no"
    return thread


def refused(call) -> httpx.Response:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        call()
    return caught.value.response


def test_goto_and_update_by_a_reviewer_run_the_thread_from_that_node_and_are_audited(serve, worker, alice, bob, pool):
    worker()
    thread = decided_purchase(serve, alice, bob)
    reviewer = get_sync_client(url=serve, api_key=bob)
    again = reviewer.runs.wait(thread, "purchase", command={"update": {"quantity": 1}, "goto": "quote"})
    [asked] = again["__interrupt__"]  # quoted anew for one laptop, and at the sign-off again: nothing skipped it
    assert asked["value"][0]["action_request"]["args"]["total_cents"] == 120000
    [applied] = [e for e in events_of(pool, thread) if e["kind"] == "command_applied"]
    assert applied["actor"] == "bob" and applied["detail"]["goto"] == ["quote"] and applied["detail"]["update"] == {"quantity": 1}


def test_goto_by_the_threads_requester_is_refused_403_and_changes_nothing(serve, worker, alice, bob, database_url):
    worker()
    thread = decided_purchase(serve, alice, bob)
    before = table_counts(database_url)
    answer = refused(lambda: get_sync_client(url=serve, api_key=alice).runs.wait(
        thread, "purchase", command={"update": {"approved_args": {"item": "laptop"}}, "goto": "place_order"}))
    assert answer.status_code == 403 and "requested thread" in answer.json()["detail"]
    assert {k: v for k, v in table_counts(database_url).items() if k != "audit_events"} == \
           {k: v for k, v in before.items() if k != "audit_events"}
    assert get_sync_client(url=serve, api_key=alice).threads.get_state(thread)["values"]["outcome"] == "not ordered: no"


BUYERS_POLICY = """
[roles]
support-lead = ["alice"]
finance = ["carol"]
buyers = ["carol"]

[gates."purchase.approval"]
stages = [{ role = "buyers", above = 0 }]
"""


def test_goto_by_someone_the_policy_does_not_let_decide_the_graphs_gates_is_refused_403(serve, worker, alice, bob, pool):
    from checkpoint import tokens
    from checkpoint.policy import parse_policy, store_policy

    worker()
    store_policy(pool, parse_policy(BUYERS_POLICY, "buyers.toml"), "admin")
    carol = tokens.create(pool, "carol")
    thread = get_sync_client(url=serve, api_key=alice).threads.create()["thread_id"]
    get_sync_client(url=serve, api_key=alice).runs.wait(thread, "purchase", input=LAPTOPS)
    get_sync_client(url=serve, api_key=carol).runs.wait(thread, "purchase", command={"resume": [{"type": "response", "args": "no"}]})
    answer = refused(lambda: get_sync_client(url=serve, api_key=bob).runs.create(thread, "purchase", command={"goto": "quote"}))
    assert answer.status_code == 403 and "may not decide graph purchase's gates" in answer.json()["detail"]
    assert "command_applied" not in [e["kind"] for e in events_of(pool, thread)]


def test_an_update_carried_by_a_resume_is_refused_409_and_changes_nothing(serve, worker, alice, bob, database_url, pool):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    asked = client.runs.wait(thread, "purchase", input=LAPTOPS)["__interrupt__"][0]
    before = table_counts(database_url)
    answer = refused(lambda: get_sync_client(url=serve, api_key=bob).runs.wait(
        thread, "purchase", command={"resume": {asked["id"]: ACCEPT}, "update": {"quantity": 50}}))
    assert answer.status_code == 409 and "may not carry" in answer.json()["detail"]
    assert {k: v for k, v in table_counts(database_url).items() if k != "audit_events"} == \
           {k: v for k, v in before.items() if k != "audit_events"}
    assert client.threads.get(thread)["status"] == "interrupted" and client.threads.get_state(thread)["values"]["quantity"] == 2


def test_goto_while_the_thread_waits_at_its_gate_is_refused_409(serve, worker, alice, bob, database_url):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "purchase", input=LAPTOPS)
    before = table_counts(database_url)
    answer = refused(lambda: get_sync_client(url=serve, api_key=bob).runs.create(thread, "purchase", command={"goto": "place_order"}))
    assert answer.status_code == 409 and "command.resume first" in answer.json()["detail"]
    assert {k: v for k, v in table_counts(database_url).items() if k != "audit_events"} == \
           {k: v for k, v in before.items() if k != "audit_events"}


def test_goto_to_a_node_the_graph_does_not_have_is_refused_422_naming_its_nodes(serve, worker, alice, bob):
    worker()
    thread = decided_purchase(serve, alice, bob)
    answer = refused(lambda: get_sync_client(url=serve, api_key=bob).runs.create(thread, "purchase", command={"goto": "ship"}))
    assert answer.status_code == 422 and "quote, approval, place_order" in answer.json()["detail"]


def test_config_configurable_reaches_the_graphs_node_but_never_its_thread_id(echo_serve, alice):
    client = get_sync_client(url=echo_serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    values = client.runs.wait(thread, "echo", input={"text": "hi"},
                              config={"configurable": {"x": "from the run", "thread_id": "someone-else"}, "tags": ["nightly"]})
    assert values["x"] == "from the run" and values["thread"] == thread and values["tags"] == ["nightly"]


def test_a_stateless_run_deletes_its_thread_when_it_ends_but_keeps_its_audit(echo_serve, alice, pool):
    client = get_sync_client(url=echo_serve, api_key=alice)
    run = client.runs.create(None, "echo", input={"text": "hi"})
    thread = run["thread_id"]

    def gone() -> bool:
        try:
            client.threads.get(thread)
            return False
        except httpx.HTTPStatusError as exc:
            return exc.response.status_code == 404

    wait_until(gone, timeout=30, what="the stateless run's thread deleted")
    assert count_rows(pool, "checkpoints", thread_id=thread) == 0 and count_rows(pool, "jobs", thread_id=thread) == 0
    kinds = [e["kind"] for e in events_of(pool, thread)]
    assert kinds[0] == "thread_started" and "thread_deleted" in kinds  # the audit outlives the thread


def test_a_stateless_run_that_stops_at_a_gate_keeps_its_thread_and_says_why(serve, worker, alice, pool):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.runs.create(None, "purchase", input=LAPTOPS)["thread_id"]
    wait_until(lambda: any(e["kind"] == "thread_kept" for e in events_of(pool, thread)), timeout=30, what="the thread kept")
    [kept] = [e for e in events_of(pool, thread) if e["kind"] == "thread_kept"]
    assert "waits at approval" in kept["detail"]["reason"]
    assert client.threads.get(thread)["status"] == "interrupted"


def test_an_oversized_body_is_refused_413_in_langgraphs_shape(serve, alice):
    huge = httpx.post(f"{serve}/threads", json={"metadata": {"x": "y" * 300_000}}, headers={"x-api-key": alice})
    assert huge.status_code == 413 and set(huge.json()) == {"detail"} and "over" in huge.json()["detail"]


def test_many_run_creations_at_once_on_a_one_connection_pool_all_complete(pool, database_url, monkeypatch):
    """create_run never holds a pooled connection while it waits for another: on a pool of one
    connection, runs continuing finished threads from several clients at once all go through."""
    from checkpoint import jobs
    from checkpoint.database import open_pool
    from web.langgraph_api.runs import create_run

    monkeypatch.chdir(EXAMPLE)
    count = 8
    with open_pool(database_url, max_size=1) as one:
        one.timeout = 5.0  # far below what a client waits: a second checkout while holding the one would time out
        for n in range(count):
            jobs.submit(one, f"p{n}", "purchase", "laptops", graph_input=LAPTOPS, deadline_hours=8, actor="alice")
        with one.connection() as conn:  # as if each had run to its end
            conn.execute("UPDATE jobs SET status = 'done'")
            conn.execute("UPDATE threads SET status = 'finished'")
        failures: list[BaseException] = []

        def create(n: int) -> None:
            try:
                create_run(one, "alice", f"p{n}", {"assistant_id": "purchase", "input": {**LAPTOPS, "quantity": 1}})
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        clients = [threading.Thread(target=create, args=(n,)) for n in range(count)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
        assert failures == []
        with one.connection() as conn:
            queued = conn.execute("SELECT count(*) AS n FROM threads WHERE status = 'queued'").fetchone()["n"]
    assert queued == count
