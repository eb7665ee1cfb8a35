"""The floor under `signoff worker`: what stock LangGraph alone costs, in CPU per
thread, to run the support graph's path to its gate, many threads at once in one process.

A script, not a test. Run from the project root:
    python tests/benchmarks/floor_bench.py [--threads 500] [--concurrency 100] [--only ABCD]

Each variant runs N threads, C at a time, against a scripted OpenAI-compatible server in a
separate process (so its CPU is not counted; rules as worker_bench.py's `scripted_server`,
0.5 s per call) and its own scratch database, after a few warm-up threads. It reports this
process's CPU seconds (os.times, user + system, all threads) per thread and the makespan:

  A. the real support graph (graphs/support.py, ResilientAgentNode and all), stock
     `PostgresSaver`, `graph.invoke(..., durability="sync")` in a ThreadPoolExecutor(C);
  B. the same, on `make_saver`'s saver (PostgresSaver without its instance lock on a pool);
  C. a minimal sync graph of the same shape (classify -> lookup_kb -> agent -> escalate,
     interrupt before review) with plain ChatOpenAI.invoke calls and the same prompts,
     stock PostgresSaver, invoke, ThreadPoolExecutor(C);
  E. the support graph run as the worker runs it, minus the worker's own records (jobs,
     threads rows, progress events, settle): make_saver, one shared step executor with
     checkpoint saves inline (runtime/worker.py share_step_executor), `stream_mode=["tasks"]`
     with node events and tokens handed over directly (ThreadRunner._stream_options);
  D. that minimal graph async: async nodes, ChatOpenAI.ainvoke, stock AsyncPostgresSaver on an
     AsyncConnectionPool, `graph.ainvoke(..., durability="sync")`, gather under Semaphore(C).

Signoff's own figure comes from worker_bench.py (`--only 1`): the worker process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import ROOT, machine, postgres_server, scratch_database  # noqa: E402

MESSAGE = "The sync engine corrupts my notes"
WARM = 5

SERVER = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.fault_server import FaultServer, ok, _Server
from tests.scripted import CANNOT_ANSWER
_Server.request_queue_size = 1024  # 100 clients connect at once; the default backlog (5) drops SYNs
latency = float(sys.argv[1])
server = FaultServer().start()
server.rule("Classify the customer message", ok('{{"intent": "technical"}}', delay=latency))
server.rule("technical support agent", ok(CANNOT_ANSWER, delay=latency))
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""


def model_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def chat_model(base_url: str) -> Any:
    from langchain_openai import ChatOpenAI

    # as nodes/models.py builds it; JSON answers are not streamed (ModelHandle.bound)
    return ChatOpenAI(model="bench", api_key="bench", base_url=base_url, timeout=60, max_retries=0, stream_usage=True,  # type: ignore[arg-type]
                      disable_streaming=True)


def response_format(schema: Any) -> dict[str, Any]:
    return {"extra_body": {"response_format": {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}}}


# --- the minimal graph of the support path's shape ---------------------------------------------

TICKET_SQL = "INSERT INTO tickets (thread_id, intent, summary) VALUES (%s, %s, %s) ON CONFLICT (thread_id) DO NOTHING RETURNING id"
AUDIT_SQL = "INSERT INTO audit_events (thread_id, actor, kind, detail) VALUES (%s, %s, %s, %s)"


def minimal_state() -> Any:
    from typing_extensions import TypedDict

    class State(TypedDict, total=False):
        message: str
        intent: str
        kb_hints: list[str]
        passages: list[str]
        sources: list[str]
        article: str | None
        ticket_id: int | None
        draft: str

    return State


def minimal_sync_graph(pool: Any, base_url: str) -> Any:
    from langgraph.config import get_config
    from langgraph.graph import END, START, StateGraph
    from psycopg.types.json import Jsonb

    from graphs import support
    from nodes.handover import load_playbook
    from nodes.tools import KB_SEARCH_SQL

    State = minimal_state()
    classify_chat = chat_model(base_url).bind(**response_format(support.IntentChoice))
    agent_chat = chat_model(base_url).bind(**response_format(support.KbAnswer))

    def kb(query: str, category: str | None, limit: int = 3) -> list[dict[str, Any]]:
        with pool.connection() as conn:
            return conn.execute(KB_SEARCH_SQL, {"q": query, "cat": category, "limit": limit}).fetchall()

    def classify(state: Any) -> dict[str, Any]:
        hints = [f"{a['title']} ({a['category']})" for a in kb(state["message"], None)]
        answer = classify_chat.invoke(support.classify_prompt({**state, "kb_hints": hints}))
        return {"intent": support.IntentChoice.model_validate_json(answer.content).intent}

    def lookup_kb(state: Any) -> dict[str, Any]:
        articles = kb(state["message"], state.get("intent")) or kb(state["message"], None)
        return {"passages": [f"{a['title']}\n{a['body']}" for a in articles], "sources": [a["slug"] for a in articles]}

    def agent(state: Any) -> dict[str, Any]:
        answer = agent_chat.invoke(support.agent_prompt({**state, **support.offered(load_playbook())}))
        number, sources = support.KbAnswer.model_validate_json(answer.content).option, state.get("sources", [])
        return {"article": sources[number - 1] if 0 < number <= len(sources) else None}

    def escalate(state: Any) -> dict[str, Any]:
        tid = get_config()["configurable"]["thread_id"]
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(TICKET_SQL, (tid, state["intent"], state["message"][:500])).fetchone()
            conn.execute(AUDIT_SQL, (tid, "signoff", "ticket_opened", Jsonb({"ticket_id": row["id"]})))
        return {"ticket_id": row["id"], "draft": f"ticket #{row['id']}"}

    return _wire(StateGraph(State), classify, lookup_kb, agent, escalate, START, END)


def minimal_async_graph(pool: Any, base_url: str) -> Any:
    from langgraph.config import get_config
    from langgraph.graph import END, START, StateGraph
    from psycopg.types.json import Jsonb

    from graphs import support
    from nodes.handover import load_playbook
    from nodes.tools import KB_SEARCH_SQL

    State = minimal_state()
    classify_chat = chat_model(base_url).bind(**response_format(support.IntentChoice))
    agent_chat = chat_model(base_url).bind(**response_format(support.KbAnswer))

    async def kb(query: str, category: str | None, limit: int = 3) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            return await (await conn.execute(KB_SEARCH_SQL, {"q": query, "cat": category, "limit": limit})).fetchall()

    async def classify(state: Any) -> dict[str, Any]:
        hints = [f"{a['title']} ({a['category']})" for a in await kb(state["message"], None)]
        answer = await classify_chat.ainvoke(support.classify_prompt({**state, "kb_hints": hints}))
        return {"intent": support.IntentChoice.model_validate_json(answer.content).intent}

    async def lookup_kb(state: Any) -> dict[str, Any]:
        articles = await kb(state["message"], state.get("intent")) or await kb(state["message"], None)
        return {"passages": [f"{a['title']}\n{a['body']}" for a in articles], "sources": [a["slug"] for a in articles]}

    async def agent(state: Any) -> dict[str, Any]:
        answer = await agent_chat.ainvoke(support.agent_prompt({**state, **support.offered(load_playbook())}))
        number, sources = support.KbAnswer.model_validate_json(answer.content).option, state.get("sources", [])
        return {"article": sources[number - 1] if 0 < number <= len(sources) else None}

    async def escalate(state: Any) -> dict[str, Any]:
        tid = get_config()["configurable"]["thread_id"]
        async with pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(TICKET_SQL, (tid, state["intent"], state["message"][:500]))).fetchone()
            await conn.execute(AUDIT_SQL, (tid, "signoff", "ticket_opened", Jsonb({"ticket_id": row["id"]})))
        return {"ticket_id": row["id"], "draft": f"ticket #{row['id']}"}

    return _wire(StateGraph(State), classify, lookup_kb, agent, escalate, START, END)


def _wire(graph: Any, classify: Any, lookup_kb: Any, agent: Any, escalate: Any, START: Any, END: Any) -> Any:
    graph.add_node("classify", classify)
    graph.add_node("lookup_kb", lookup_kb)
    graph.add_node("technical_agent", agent)
    graph.add_node("escalate", escalate)
    graph.add_node("review", lambda state: {})
    graph.add_node("draft_reply", lambda state: {})
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "lookup_kb")
    graph.add_edge("lookup_kb", "technical_agent")
    graph.add_conditional_edges("technical_agent", lambda s: "draft_reply" if s.get("article") else "escalate")
    graph.add_edge("draft_reply", "review")
    graph.add_edge("escalate", "review")
    graph.add_edge("review", END)
    return graph


# --- running them ------------------------------------------------------------------------------


def prepare(url: str) -> None:
    from checkpoint.database import open_pool
    from checkpoint.migrations import migrate
    from nodes.knowledge import ensure_loaded

    pool = open_pool(url, max_size=2)
    try:
        migrate(pool)
        ensure_loaded(pool)
    finally:
        pool.close()


def check(pool: Any, n: int) -> None:
    with pool.connection() as conn:
        done = conn.execute("SELECT count(*) AS n FROM tickets").fetchone()["n"]
    if done != n:
        raise SystemExit(f"only {done} of {n} threads reached the gate")


def run_sync(url: str, base_url: str, variant: str, n: int, concurrency: int) -> dict[str, float]:
    from langgraph.checkpoint.postgres import PostgresSaver

    from checkpoint.database import make_saver, open_pool
    from checkpoint.settings import Settings
    from graphs.registry import SUPPORT
    from nodes.context import SignoffContext
    from nodes.models import registry_from_settings

    pool = open_pool(url, max_size=min(concurrency, 32) + 4)  # the worker's pool size
    try:
        saver = make_saver(pool) if variant in "BE" else PostgresSaver(pool)  # type: ignore[arg-type]
        if variant in "ABE":
            settings = Settings.from_env({"SIGNOFF_MODEL": "openai:bench", "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "bench",
                                          "DATABASE_URL": url})
            context: Any = SignoffContext(models=registry_from_settings(settings), pool=pool)
            graph = SUPPORT.build().compile(checkpointer=saver, interrupt_before=list(SUPPORT.gates))
            graph_input = SUPPORT.make_input(MESSAGE, {})
        else:
            context = None
            graph = minimal_sync_graph(pool, base_url).compile(checkpointer=saver, interrupt_before=["review"])
            graph_input = {"message": MESSAGE}

        def invoke(tid: str) -> None:
            graph.invoke(graph_input, {"configurable": {"thread_id": tid}}, context=context, durability="sync")

        one = invoke
        if variant == "E":
            from dataclasses import replace

            from runtime.thread_runner import _token_handler
            from runtime.worker import share_step_executor

            share_step_executor(max(64, 8 * concurrency))
            events: list[Any] = []

            def stream(tid: str) -> None:  # as WorkerRunner streams (ThreadRunner._stream_options)
                config = {"configurable": {"thread_id": tid}, "callbacks": [_token_handler(events.append)]}
                for _ in graph.stream(graph_input, config, context=replace(context, emit=events.append), stream_mode=["tasks"], durability="sync"):
                    pass

            one = stream

        with ThreadPoolExecutor(concurrency) as executor:
            list(executor.map(one, [f"warm-{i}" for i in range(WARM)]))
            used, started = cpu(), time.monotonic()
            list(executor.map(one, [f"t-{i}" for i in range(n)]))
            elapsed, used = time.monotonic() - started, cpu() - used
        check(pool, n + WARM)
    finally:
        pool.close()
    return {"cpu_ms": used / n * 1000, "makespan": elapsed}


def run_async(url: str, base_url: str, n: int, concurrency: int) -> dict[str, float]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    async def main() -> dict[str, float]:
        kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(url, min_size=1, max_size=min(concurrency, 32) + 4, kwargs=kwargs, open=False) as pool:
            await pool.wait()
            graph = minimal_async_graph(pool, base_url).compile(checkpointer=AsyncPostgresSaver(pool), interrupt_before=["review"])  # type: ignore[arg-type]
            limit = asyncio.Semaphore(concurrency)

            async def one(tid: str) -> None:
                async with limit:
                    await graph.ainvoke({"message": MESSAGE}, {"configurable": {"thread_id": tid}}, durability="sync")

            await asyncio.gather(*(one(f"warm-{i}") for i in range(WARM)))
            used, started = cpu(), time.monotonic()
            await asyncio.gather(*(one(f"t-{i}") for i in range(n)))
            elapsed, used = time.monotonic() - started, cpu() - used
            async with pool.connection() as conn:
                done = (await (await conn.execute("SELECT count(*) AS n FROM tickets")).fetchone())["n"]
            if done != n + WARM:
                raise SystemExit(f"only {done} of {n + WARM} threads reached the gate")
            return {"cpu_ms": used / n * 1000, "makespan": elapsed}

    return _loop().run_until_complete(main())


@functools.cache
def _loop() -> asyncio.AbstractEventLoop:
    """One event loop for every async run of the script: langchain-openai shares its async HTTP
    client between ChatOpenAI instances, whose pooled connections belong to the loop they
    opened on, so a second `asyncio.run` would find them on a closed loop."""
    return asyncio.new_event_loop()


NAMES = {
    "A": "support graph, stock PostgresSaver, invoke, threads",
    "B": "support graph, make_saver (no saver lock), invoke, threads",
    "C": "minimal same-shape graph, stock PostgresSaver, invoke, threads",
    "E": "support graph as the worker runs it, no jobs/threads/progress records",
    "D": "minimal same-shape graph, AsyncPostgresSaver, ainvoke, asyncio",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--only", default="ABCDE", help="variants to run, in this order (e.g. DCDC to alternate)")
    args = parser.parse_args()
    if "E" in args.only.rstrip("E"):
        parser.error("E changes how this process runs every graph (share_step_executor): put it last")
    print(machine())
    ideal = args.threads * 2 * args.latency / args.concurrency
    server, base_url = model_server(args.latency)
    try:
        with postgres_server() as (server_url, _home):
            for variant in args.only:
                with scratch_database(server_url, "floor") as url:
                    prepare(url)
                    if variant == "D":
                        r = run_async(url, base_url, args.threads, args.concurrency)
                    else:
                        r = run_sync(url, base_url, variant, args.threads, args.concurrency)
                print(json.dumps({"variant": variant, "what": NAMES[variant], "cpu_ms_per_thread": round(r["cpu_ms"], 2),
                                  "makespan_s": round(r["makespan"], 2), "ratio_to_ideal": round(r["makespan"] / ideal, 2),
                                  "load": round(os.getloadavg()[0], 1)}), flush=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


if __name__ == "__main__":
    main()
