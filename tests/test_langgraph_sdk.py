"""LangGraph's own client (`langgraph-sdk`, unmodified) against a real `signoff serve` started
from a LangGraph project's folder (examples/purchasing), real workers and the embedded
PostgreSQL: assistants, threads, runs, streaming, interrupts resumed as audited decisions."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from langgraph_sdk import get_sync_client

from checkpoint import tokens
from checkpoint.audit import events_of
from tests.conftest import count_rows
from tests.procs import ROOT, CliProcess, process_env, table_counts, wait_until

EXAMPLE = ROOT / "examples" / "purchasing"
LAPTOPS = {"request": "two laptops for new hires", "item": "laptop", "quantity": 2}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def penv(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(ROOT), "SIGNOFF_SECRET_KEY": "s" * 40}


def spawn(penv: dict[str, str], *args: str, cwd: Path = EXAMPLE) -> CliProcess:
    popen = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=process_env(penv), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    return CliProcess(popen)


@pytest.fixture
def procs() -> Iterator[list[CliProcess]]:
    started: list[CliProcess] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.kill()
        for stream in (proc.popen.stdout, proc.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def serve(penv: dict[str, str], procs: list[CliProcess]) -> str:
    port = free_port()
    proc = spawn(penv, "serve", "--port", str(port))
    procs.append(proc)
    proc.wait_for(r"serving on http://127\.0\.0\.1:\d+", timeout=60)
    wait_until(lambda: _accepts(port), timeout=20, what="serve to accept connections")
    return f"http://127.0.0.1:{port}/langgraph"


@pytest.fixture
def worker(penv: dict[str, str], procs: list[CliProcess]):
    def start() -> CliProcess:
        proc = spawn(penv, "worker")
        procs.append(proc)
        proc.wait_for(r"worker \d+ started", timeout=60)
        return proc

    return start


def serve_with_worker(penv: dict[str, str], procs: list[CliProcess], project: Path) -> str:
    """serve and a worker started from a project's folder; the LangGraph API's URL."""
    port = free_port()
    served = spawn(penv, "serve", "--port", str(port), cwd=project)
    procs.append(served)
    served.wait_for(r"serving on", timeout=60)
    wait_until(lambda: _accepts(port), timeout=20, what="serve")
    worker = spawn(penv, "worker", cwd=project)
    procs.append(worker)
    worker.wait_for(r"worker \d+ started", timeout=60)
    return f"http://127.0.0.1:{port}/langgraph"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def cli(penv: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=EXAMPLE, env=process_env(penv), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def alice(pool) -> str:
    return tokens.create(pool, "alice")


@pytest.fixture
def bob(pool) -> str:
    """A reviewer other than the requester (an approval chain refuses the requester)."""
    return tokens.create(pool, "bob")


def test_the_sdk_runs_a_project_thread_to_its_inbox_interrupt_and_resumes_it_by_id_as_an_audited_decision(serve, worker, pool, alice, bob, penv):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    assistants = client.assistants.search()
    purchase = next(a for a in assistants if a["graph_id"] == "purchase")
    assert purchase["assistant_id"] == client.assistants.get("purchase")["assistant_id"]
    thread = client.threads.create(metadata={"team": "it"})
    result = client.runs.wait(thread["thread_id"], purchase["assistant_id"], input=LAPTOPS)
    [asked] = result["__interrupt__"]
    assert asked["value"][0]["action_request"]["action"] == "place_order"

    interrupted = client.threads.search(status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [thread["thread_id"]]
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["approval"] and state["tasks"][0]["interrupts"][0]["id"] == asked["id"]
    assert state["interrupts"][0]["id"] == asked["id"]

    with pytest.raises(httpx.HTTPStatusError) as refused:  # no self-approval: alice asked for it
        client.runs.wait(thread["thread_id"], "purchase", command={"resume": {asked["id"]: [{"type": "accept", "args": None}]}})
    assert refused.value.response.status_code == 409 and "may not decide" in refused.value.response.json()["detail"]
    reviewer = get_sync_client(url=serve, api_key=bob)
    done = reviewer.runs.wait(thread["thread_id"], "purchase", command={"resume": {asked["id"]: [{"type": "accept", "args": None}]}})
    assert done["outcome"] == "ordered 2 x laptop for 2400.00 EUR" and "__interrupt__" not in done
    assert client.threads.get(thread["thread_id"])["status"] == "idle"
    shown = json.loads(cli(penv, "show", thread["thread_id"], "--json").stdout)
    assert [(d["decision"], d["actor"]) for d in shown["decisions"]] == [("approved", "bob")]
    audit = cli(penv, "audit", thread["thread_id"])
    assert audit.returncode == 0 and "bob" in audit.stdout


def test_a_second_run_streams_its_updates(serve, worker, alice):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()
    parts = list(client.runs.stream(thread["thread_id"], "purchase", input=LAPTOPS, stream_mode="updates"))
    assert parts[0].event == "metadata"
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates[0]["quote"]["total_cents"] == 240000
    assert "__interrupt__" in updates[-1]


def test_a_wrong_missing_or_revoked_key_is_refused_and_changes_nothing(serve, pool, alice, database_url):
    before = table_counts(database_url)
    for key in (None, "sgn_wrong"):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            get_sync_client(url=serve, api_key=key).threads.create()
        assert refused.value.response.status_code == 401 and "detail" in refused.value.response.json()
    tokens.revoke(pool, "alice")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        get_sync_client(url=serve, api_key=alice).assistants.search()
    assert refused.value.response.status_code == 401
    after = table_counts(database_url)
    assert {k: v for k, v in after.items() if k not in ("audit_events", "reviewer_tokens")} == \
           {k: v for k, v in before.items() if k not in ("audit_events", "reviewer_tokens")}


def test_a_stale_resume_is_refused_409(serve, worker, alice, bob, pool):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()
    asked = client.runs.wait(thread["thread_id"], "purchase", input=LAPTOPS)["__interrupt__"][0]
    reviewer = get_sync_client(url=serve, api_key=bob)
    reviewer.runs.wait(thread["thread_id"], "purchase", command={"resume": {asked["id"]: [{"type": "response", "args": "no"}]}})
    approvals = count_rows(pool, "approvals")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        reviewer.runs.wait(thread["thread_id"], "purchase", command={"resume": {asked["id"]: [{"type": "accept", "args": None}]}})
    assert refused.value.response.status_code == 409 and "already decided by bob" in refused.value.response.json()["detail"]
    assert count_rows(pool, "approvals") == approvals

    again = client.runs.wait(thread["thread_id"], "purchase", input={**LAPTOPS, "quantity": 1})["__interrupt__"][0]
    assert again["id"] != asked["id"]  # the gate asks anew: the old question was replaced
    with pytest.raises(httpx.HTTPStatusError) as replaced:
        reviewer.runs.wait(thread["thread_id"], "purchase", command={"resume": {asked["id"]: [{"type": "accept", "args": None}]}})
    assert replaced.value.response.status_code == 409 and "no longer pending" in replaced.value.response.json()["detail"]
    assert count_rows(pool, "approvals") == approvals


def test_a_thread_started_from_the_cli_is_resumed_from_the_sdk_and_sdk_threads_are_pending_in_the_cli(serve, worker, bob, alice, penv):
    worker()
    assert cli(penv, "start", "purchase", "--input", json.dumps(LAPTOPS), "--thread", "c1", "--detach").returncode == 0
    client = get_sync_client(url=serve, api_key=bob)
    wait_until(lambda: client.threads.get("c1")["status"] == "interrupted", what="c1 at its gate")
    [asked] = client.threads.get_state("c1")["interrupts"]
    done = client.runs.wait("c1", "purchase", command={"resume": [{"type": "response", "args": "buy refurbished"}]})
    assert done["outcome"] == "not ordered: buy refurbished" and asked["id"]

    mine = get_sync_client(url=serve, api_key=alice)
    thread = mine.threads.create()
    mine.runs.wait(thread["thread_id"], "purchase", input=LAPTOPS)
    pending = json.loads(cli(penv, "pending", "--json").stdout)["threads"]
    assert [t["thread_id"] for t in pending] == [thread["thread_id"]]


def test_a_run_on_a_busy_thread_is_rejected_enqueued_or_interrupts_the_queued_one_and_cancel_takes_it_off_the_queue(serve, worker, alice):
    import signal

    held = worker()
    client = get_sync_client(url=serve, api_key=alice)
    held.send(signal.SIGSTOP)  # live for a few seconds more, claiming nothing: runs stay queued
    try:
        thread = client.threads.create()["thread_id"]
        first = client.runs.create(thread, "purchase", input=LAPTOPS)
        assert first["status"] == "pending" and client.threads.get(thread)["status"] == "busy"
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.runs.create(thread, "purchase", input=LAPTOPS)
        assert refused.value.response.status_code == 409
        second = client.runs.create(thread, "purchase", input={**LAPTOPS, "quantity": 3}, multitask_strategy="enqueue")
        assert second["status"] == "pending"
        client.runs.cancel(thread, first["run_id"])
        assert client.runs.get(thread, first["run_id"])["status"] == "interrupted"
    finally:
        held.send(signal.SIGCONT)
    done = client.runs.join(thread, second["run_id"])
    assert done["total_cents"] == 360000 and "__interrupt__" in done
    assert [r["status"] for r in client.runs.list(thread)] == ["success", "interrupted"]


def _resume_queued_behind_a_run(serve, worker, alice, bob, between=lambda: None):
    """alice's run is queued (the worker held); bob queues an approval behind it; `between`
    runs before the worker goes on. (client, thread, bob's run)."""
    import signal

    held = worker()
    client = get_sync_client(url=serve, api_key=alice)
    held.send(signal.SIGSTOP)  # live for a few seconds more, claiming nothing: runs stay queued
    try:
        thread = client.threads.create()["thread_id"]
        client.runs.create(thread, "purchase", input=LAPTOPS)
        queued = get_sync_client(url=serve, api_key=bob).runs.create(
            thread, "purchase", command={"resume": [{"type": "accept", "args": None}]}, multitask_strategy="enqueue")
        between()
    finally:
        held.send(signal.SIGCONT)
    return client, thread, queued


def test_a_queued_resume_decides_with_the_token_it_was_sent_with(serve, worker, alice, bob, pool):
    from checkpoint.audit import events_of

    client, thread, queued = _resume_queued_behind_a_run(serve, worker, alice, bob)
    assert client.runs.join(thread, queued["run_id"])["outcome"].startswith("ordered 2 x laptop")
    [decision] = [e for e in events_of(pool, thread) if e["kind"] == "decision_approved"]
    assert decision["actor"] == "bob" and decision["detail"]["token"] == tokens.authenticate(pool, bob).token_id


def test_a_queued_resume_whose_token_was_revoked_before_it_started_decides_nothing(serve, worker, alice, bob, pool):
    client, thread, queued = _resume_queued_behind_a_run(serve, worker, alice, bob, between=lambda: tokens.revoke(pool, "bob"))
    assert "revoked" in client.runs.join(thread, queued["run_id"])["__error__"]["message"]
    assert client.runs.get(thread, queued["run_id"])["status"] == "error"
    assert client.threads.get(thread)["status"] == "interrupted"
    assert count_rows(pool, "approvals", thread_id=thread) == 0


def test_a_worker_killed_during_a_streamed_run_is_taken_over_and_the_stream_ends_with_the_order(serve, worker, bob, alice, database_url, pool):
    import threading

    from tests.procs import StatementBlock

    first = worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    asked = client.runs.wait(thread, "purchase", input=LAPTOPS)["__interrupt__"][0]
    parts: list[Any] = []
    block = StatementBlock(database_url)
    try:
        block.arm("store", "INSERT")  # the order's write waits: the worker is mid-run in place_order
        reviewer = get_sync_client(url=serve, api_key=bob)
        streaming = threading.Thread(target=lambda: parts.extend(reviewer.runs.stream(
            thread, "purchase", command={"resume": {asked["id"]: [{"type": "accept", "args": None}]}}, stream_mode=["updates", "values"])))
        streaming.start()
        pid = block.wait_blocked()["pid"]
        first.kill()
        block.terminate(pid)
    finally:
        block.close()
    worker()
    streaming.join(timeout=60)
    assert not streaming.is_alive()
    updates = [p.data for p in parts if p.event == "updates"]
    assert any("place_order" in u for u in updates)
    assert [p for p in parts if p.event == "values"][-1].data["outcome"] == "ordered 2 x laptop for 2400.00 EUR"
    assert count_rows(pool, "store", prefix="orders") == 1


def test_with_no_worker_running_serve_runs_the_run_itself(serve, alice):
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    values = [p.data for p in client.runs.stream(thread, "purchase", input=LAPTOPS, stream_mode="values") if p.event == "values"]
    assert values[-2]["total_cents"] == 240000 and "__interrupt__" in values[-1]
    assert client.threads.get(thread)["status"] == "interrupted"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
def test_a_run_created_with_interrupt_or_rollback_stops_the_running_one_in_its_worker_and_runs_instead(serve, worker, alice, database_url, strategy):
    from tests.procs import StatementBlock

    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    block = StatementBlock(database_url)
    try:
        block.arm("checkpoint_writes", "INSERT")  # the worker is mid-step in the first run
        first = client.runs.create(thread, "purchase", input=LAPTOPS)
        block.wait_blocked()
        import threading

        made: list[Any] = []
        import psycopg

        from runtime.cancelling import CHANNEL

        with psycopg.connect(database_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            creating = threading.Thread(target=lambda: made.append(client.runs.create(
                thread, "purchase", input={**LAPTOPS, "quantity": 3}, multitask_strategy=strategy)))
            creating.start()
            # the blocked step goes on only once the new run has asked the worker to stop the first
            assert next(listener.notifies(timeout=60, stop_after=1), None) is not None, "no cancel was asked for"
        block.release()
        creating.join(timeout=60)
    finally:
        block.close()
    [second] = made
    done = client.runs.join(thread, second["run_id"])
    assert done["total_cents"] == 360000 and "__interrupt__" in done
    runs = [(r["run_id"], r["status"]) for r in client.runs.list(thread)]
    if strategy == "interrupt":
        assert runs == [(second["run_id"], "success"), (first["run_id"], "interrupted")]
    else:
        assert runs == [(second["run_id"], "success")]
        assert all(s["values"].get("quantity") != 2 for s in client.threads.get_history(thread, limit=100))


CHAT = '''
from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph


def reply(state):
    get_stream_writer()({"progress": "thinking"})
    return {"messages": [AIMessage(content="hello " + state["messages"][-1].content, id="m1")]}


inner = StateGraph(MessagesState).add_node("inner", lambda s: {"messages": [AIMessage("from inner", id="m2")]})
inner = inner.add_edge(START, "inner").compile()
graph = (StateGraph(MessagesState).add_node("reply", reply).add_node("sub", inner)
         .add_edge(START, "reply").add_edge("reply", "sub").add_edge("sub", END).compile())
'''


@pytest.fixture
def chat_project(tmp_path: Path) -> Path:
    (tmp_path / "chat.py").write_text(CHAT)
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"chat": "./chat.py:graph"}}))
    return tmp_path


def test_a_stream_carries_values_updates_messages_custom_and_subgraph_steps_in_one(penv, procs, chat_project, alice):
    client = get_sync_client(url=serve_with_worker(penv, procs, chat_project), api_key=alice)
    thread = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(thread, "chat", input={"messages": [{"role": "user", "content": "bob"}]},
                                    stream_mode=["values", "updates", "messages-tuple", "custom"], stream_subgraphs=True))
    events = [p.event for p in parts]
    assert events[0] == "metadata"
    assert [p.data for p in parts if p.event == "custom"] == [{"progress": "thinking"}]
    said = [p.data[0]["content"] for p in parts if p.event == "messages"]
    assert "hello bob" in said and "from inner" in said
    assert any(e.startswith("updates|sub:") for e in events)
    assert [m["content"] for m in [p.data for p in parts if p.event == "values"][-1]["messages"]] == ["bob", "hello bob", "from inner"]
    assert client.runs.list(thread)[0]["status"] == "success" and client.threads.get(thread)["status"] == "idle"


def test_reads_change_nothing_and_errors_come_in_langgraphs_shape(serve, worker, alice, database_url):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    run = client.runs.create(thread, "purchase", input=LAPTOPS)
    client.runs.join(thread, run["run_id"])
    before = table_counts(database_url)
    client.threads.get(thread), client.threads.get_state(thread), client.threads.get_history(thread), client.runs.get(thread, run["run_id"])
    client.runs.list(thread), client.threads.search(status="interrupted"), client.assistants.get_schemas("purchase"), client.assistants.get_graph("purchase")
    assert "approval" in client.assistants.get_subgraphs("purchase")
    list(client.runs.join_stream(thread, run["run_id"]))
    assert {k: v for k, v in table_counts(database_url).items() if k != "reviewer_tokens"} == \
           {k: v for k, v in before.items() if k != "reviewer_tokens"}

    headers = {"x-api-key": alice}
    http = httpx.Client(base_url=serve, headers=headers)
    missing = http.get("/threads/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    bad = http.post(f"/threads/{thread}/runs", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and "JSON object" in bad.json()["detail"]
    unknown = http.post(f"/threads/{thread}/runs", json={"assistant_id": "nope"})
    assert unknown.status_code == 404 and "assistant" in unknown.json()["detail"]
    goto = http.post(f"/threads/{thread}/runs", json={"assistant_id": "purchase", "command": {"goto": "place_order"}})
    assert goto.status_code == 409 and "command.resume first" in goto.json()["detail"]
    huge = http.post("/threads", json={"metadata": {"x": "y" * 300_000}})
    assert huge.status_code == 413 and set(huge.json()) == {"detail"}
    unserved = http.put("/threads")
    assert unserved.status_code == 405 and set(unserved.json()) == {"detail"}
    assert {k: v for k, v in table_counts(database_url).items() if k not in ("reviewer_tokens", "audit_events")} == \
           {k: v for k, v in before.items() if k not in ("reviewer_tokens", "audit_events")}


def test_threads_are_created_found_by_metadata_paged_updated_and_deleted_until_they_run(serve, alice):
    client = get_sync_client(url=serve, api_key=alice)
    made = [client.threads.create(metadata={"team": team, "n": i}) for i, team in enumerate(["it", "it", "hr"])]
    assert client.threads.create(thread_id=made[0]["thread_id"], if_exists="do_nothing")["thread_id"] == made[0]["thread_id"]
    with pytest.raises(httpx.HTTPStatusError) as taken:
        client.threads.create(thread_id=made[0]["thread_id"])
    assert taken.value.response.status_code == 409
    it = client.threads.search(metadata={"team": "it"}, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in it] == [made[0]["thread_id"], made[1]["thread_id"]]
    assert [t["thread_id"] for t in client.threads.search(metadata={"team": "it"}, limit=1, offset=1, sort_order="asc")] == [made[1]["thread_id"]]
    assert client.threads.update(made[2]["thread_id"], metadata={"team": "it"})["metadata"]["team"] == "it"
    assert len(client.threads.search(metadata={"team": "it"}, status="idle")) == 3
    client.threads.delete(made[2]["thread_id"])
    with pytest.raises(httpx.HTTPStatusError) as gone:
        client.threads.get(made[2]["thread_id"])
    assert gone.value.response.status_code == 404


def test_a_run_paused_at_an_interrupt_point_runs_on_with_no_input_as_an_approval(serve, worker, alice, penv):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    paused = client.runs.wait(thread, "purchase", input=LAPTOPS, interrupt_before=["quote"])
    assert "__interrupt__" not in paused and client.threads.get_state(thread)["next"] == ["quote"]
    assert client.threads.get(thread)["status"] == "interrupted"
    asked = client.runs.wait(thread, "purchase")["__interrupt__"]
    assert asked[0]["value"][0]["action_request"]["args"]["total_cents"] == 240000
    shown = json.loads(cli(penv, "show", thread, "--json").stdout)
    assert [(d["decision"], d["actor"]) for d in shown["decisions"]] == [("approved", "alice")]


def test_a_resume_after_the_deadline_passed_is_refused_409_and_records_nothing(serve, worker, alice, bob, pool):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    asked = client.runs.wait(thread, "purchase", input=LAPTOPS)["__interrupt__"][0]
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET deadline = now() - interval '1 minute' WHERE thread_id = %s", (thread,))
    approvals = count_rows(pool, "approvals", decision="approved")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        get_sync_client(url=serve, api_key=bob).runs.create(thread, "purchase", command={"resume": {asked["id"]: [{"type": "accept"}]}})
    assert refused.value.response.status_code == 409 and "deadline passed" in refused.value.response.json()["detail"]
    assert count_rows(pool, "approvals", decision="approved") == approvals


TYPING = '''
import os

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph

model = ChatOpenAI(base_url=os.environ["TYPING_MODEL_URL"], api_key="test", model="m", max_retries=0)


def reply(state):
    return {"messages": [model.invoke(state["messages"])]}


graph = StateGraph(MessagesState).add_node("reply", reply).add_edge(START, "reply").add_edge("reply", END).compile()
'''
ANSWER = "your two laptops ship on monday"


class Typing:
    """A serve process and workers on a project graph whose node calls a chat model that
    streams ANSWER word by word (an OpenAI-compatible server), and the SDK's client on it."""

    def __init__(self, env: dict[str, str], procs: list[CliProcess], project: Path, model: Any, api_key: str) -> None:
        self.env, self.procs, self.project, self.model = env, procs, project, model
        port = free_port()
        served = spawn(env, "serve", "--port", str(port), cwd=project)
        procs.append(served)
        served.wait_for(r"serving on", timeout=60)
        wait_until(lambda: _accepts(port), timeout=20, what="serve")
        self.client = get_sync_client(url=f"http://127.0.0.1:{port}/langgraph", api_key=api_key)

    def worker(self) -> CliProcess:
        proc = spawn(self.env, "worker", cwd=self.project)
        self.procs.append(proc)
        proc.wait_for(r"worker \d+ started", timeout=60)
        return proc


@pytest.fixture
def streaming_chat(penv: dict[str, str], procs: list[CliProcess], tmp_path: Path, alice: str) -> Iterator[Typing]:
    from tests.fault_server import FaultServer, ok

    (tmp_path / "assistant.py").write_text(TYPING)
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"typing": "./assistant.py:graph"}}))
    with FaultServer() as model:
        model.rule("", ok(ANSWER))
        yield Typing({**penv, "TYPING_MODEL_URL": model.base_url}, procs, tmp_path, model, alice)


ASK = {"messages": [{"role": "user", "content": "when do the laptops ship?"}]}


def test_messages_stream_as_the_model_types_them_and_the_whole_message_is_not_sent_again(streaming_chat):
    streaming_chat.worker()
    client = streaming_chat.client
    thread = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(thread, "typing", input=ASK, stream_mode="messages-tuple"))
    said = [p.data for p in parts if p.event == "messages"]
    assert len(said) == len(ANSWER.split()) and {m["type"] for m, _ in said} == {"AIMessageChunk"}
    assert "".join(m["content"] for m, _ in said) == ANSWER
    final = client.threads.get_state(thread)["values"]["messages"][-1]
    assert final["content"] == ANSWER and {m["id"] for m, _ in said} == {final["id"]}
    assert {(meta["langgraph_node"], meta["langgraph_step"]) for _, meta in said} == {("reply", 1)}


def test_a_stream_joined_again_after_its_last_event_id_carries_the_rest_of_the_message_once(streaming_chat):
    streaming_chat.worker()
    client = streaming_chat.client
    thread = client.threads.create()["thread_id"]
    before: list[Any] = []
    for part in client.runs.stream(thread, "typing", input=ASK, stream_mode="messages-tuple"):
        before.append(part)
        if sum(p.event == "messages" for p in before) == 2:
            break  # the client goes away mid-message
    run_id = before[0].data["run_id"]
    rest = list(client.runs.join_stream(thread, run_id, stream_mode="messages-tuple", last_event_id=before[-1].id))
    said = [p.data[0] for p in before + rest if p.event == "messages"]
    assert "".join(m["content"] for m in said) == ANSWER and {m["type"] for m in said} == {"AIMessageChunk"}
    replay = list(client.runs.join_stream(thread, run_id, stream_mode="messages-tuple"))
    assert [(p.id, p.event, p.data) for p in before + rest] == [(p.id, p.event, p.data) for p in replay]


def test_a_worker_killed_during_the_model_call_is_taken_over_and_the_stream_types_the_answer_once(streaming_chat):
    import threading

    from tests.fault_server import held

    release = threading.Event()
    streaming_chat.model.once("", held(release))
    first = streaming_chat.worker()
    client = streaming_chat.client
    thread = client.threads.create()["thread_id"]
    parts: list[Any] = []
    streaming = threading.Thread(target=lambda: parts.extend(client.runs.stream(thread, "typing", input=ASK, stream_mode="messages-tuple")))
    streaming.start()
    wait_until(lambda: streaming_chat.model.request_count == 1, timeout=60, what="the first worker's model call")
    first.kill()
    release.set()
    streaming_chat.worker()
    streaming.join(timeout=60)
    assert not streaming.is_alive()
    said = [p.data[0] for p in parts if p.event == "messages"]
    assert "".join(m["content"] for m in said) == ANSWER and {m["type"] for m in said} == {"AIMessageChunk"}
    assert streaming_chat.model.request_count == 2 and client.threads.get_state(thread)["values"]["messages"][-1]["content"] == ANSWER


def test_a_step_saved_before_its_streamed_chunks_are_written_waits_for_them_and_its_message_is_sent_once(streaming_chat, database_url, pool):
    import threading
    import time

    from tests.procs import StatementBlock
    from web.langgraph_api.stream import POLL_SECONDS

    streaming_chat.worker()
    client = streaming_chat.client
    thread = client.threads.create()["thread_id"]
    parts: list[Any] = []
    block = StatementBlock(database_url)
    try:
        block.arm("progress_events", "INSERT", when="NEW.event->>'event' = 'token'")  # the chunks are written late
        streaming = threading.Thread(target=lambda: parts.extend(client.runs.stream(thread, "typing", input=ASK, stream_mode="messages-tuple")))
        streaming.start()
        block.wait_blocked()
        wait_until(lambda: count_rows(pool, "checkpoints", thread_id=thread, checkpoint_ns="") >= 3, timeout=30, what="the step's checkpoint")
        time.sleep(POLL_SECONDS * 1.5)  # the stream looks at least once while the step is saved and its chunks are not
    finally:
        block.close()
    streaming.join(timeout=60)
    assert not streaming.is_alive()
    said = [p.data[0] for p in parts if p.event == "messages"]
    assert "".join(m["content"] for m in said) == ANSWER and {m["type"] for m in said} == {"AIMessageChunk"}
