"""The durable step: a Signoff run against stock LangGraph and a bare INSERT (a script, not a test).

Run from the project root:  python tests/benchmarks/checkpoint_write_bench.py [--steps 100] [--repeats 7]

One graph of N trivial steps (a counter node looping on itself; no model), run to the end
with `durability="sync"` (every step's checkpoint committed before the next starts), three ways
on one scratch database, interleaved, each repeated:

- signoff: the product's run path, `ThreadRunner.start` on Signoff's pool (`open_pool`): the
  thread row, the run claim (advisory lock; the run's checkpoints are written through the
  session that holds it), progress events persisted for `watch`, the stream modes the CLI
  uses, the stop mirrored into `threads`;
- signoff, old pool check: the same with psycopg_pool's stock `check_connection` on every
  checkout (what Signoff did before its pool checked connections only when idle), for the before/after figure;
- stock: `PostgresSaver.from_conn_string` (one connection), same graph and stream modes;
- stock on a pool: `PostgresSaver(pool)` on a plain psycopg_pool pool (no check callback),
  which shows what the library does on a pool, apart from anything Signoff adds;
- bare: `INSERT` of a row the size of a checkpoint, then commit, N times on one connection.

`--count-only` prints the deterministic part: statements and round trips per step, Signoff
against stock (tests/benchmarks/statement_count.py wraps psycopg to count them).

Per-step time is a whole run's time over its N steps, so for Signoff it includes what a run
costs once (thread row, claim, settle, the last progress write) spread over N steps, a bias
against Signoff that shrinks as N grows; the median over repeats is printed with the ratio to
stock. The embedded server runs with its defaults (fsync and synchronous_commit
on, as the product); the script prints them.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any, Callable

from bench_env import machine, postgres_server, scratch_database
from typing_extensions import TypedDict


class Counter(TypedDict):
    n: int
    target: int


def build_graph():
    from langgraph.graph import END, START, StateGraph

    def step(state: Counter) -> dict[str, int]:
        return {"n": state["n"] + 1}

    def again(state: Counter) -> str:
        return "step" if state["n"] < state["target"] else END

    graph = StateGraph(Counter)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", again)
    return graph


def spec():
    from graphs.registry import GraphSpec

    return GraphSpec(
        name="counter", build=build_graph, gates=(), make_input=lambda text, opts: {"n": 0, "target": int(text)},
        review_content=lambda v: "", summarize=lambda v: f"counted to {v.get('n')}", outcome=lambda v: f"n={v.get('n')}",
    )


def signoff_run(pool: Any, steps: int) -> float:
    from runtime.thread_runner import ThreadRunner
    from nodes.context import SignoffContext

    runner = ThreadRunner(pool, spec(), SignoffContext(models=None, pool=pool))  # type: ignore[arg-type]
    begun = time.perf_counter()
    stop = runner.start(f"s-{uuid.uuid4().hex[:10]}", str(steps), {}, lambda event: None)
    elapsed = time.perf_counter() - begun
    assert stop.status == "finished" and stop.values["n"] == steps, stop
    return elapsed


def stock_run(graph: Any, steps: int) -> float:
    config = {"configurable": {"thread_id": f"k-{uuid.uuid4().hex[:10]}"}, "recursion_limit": 10 * steps}
    begun = time.perf_counter()
    for _ in graph.stream({"n": 0, "target": steps}, config, durability="sync", stream_mode=["tasks", "messages", "custom"]):
        pass
    return time.perf_counter() - begun


def bare_run(conn: Any, steps: int, payload: bytes) -> float:
    begun = time.perf_counter()
    for _ in range(steps):
        with conn.transaction():
            conn.execute("INSERT INTO bench_rows (thread_id, payload) VALUES (%s, %s)", ("bare", payload))
    return time.perf_counter() - begun


def count_statements(signoff: Callable[[int], float], stock: Callable[[int], float]) -> None:
    """Statements and round trips per step, Signoff vs stock: the difference between runs of
    100 and 50 steps over 50, so what a run does once (thread row, claim, stop) drops out."""
    from statement_count import counting

    print("per step (difference of a 100- and a 50-step run; client-side counts, every thread of the process):")
    for label, run in (("signoff", signoff), ("stock PostgresSaver", stock)):
        per: dict[int, dict[str, int]] = {}
        for n in (50, 100):
            with counting() as counts:
                run(n)
            per[n] = counts
        print(f"  {label:<26} " + ", ".join(f"{(per[100][k] - per[50][k]) / 50:.2f} {k.replace('_', ' ')}" for k in ("statements", "round_trips"))
              + f"  (per run of 50 steps: {per[50]['statements']} statements, {per[50]['round_trips']} round trips)")


def per_step(run: Callable[[int], float], steps: int) -> float:
    """Seconds per step of one N-step run."""
    return run(steps) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count-only", action="store_true", help="Only count statements and round trips per step (deterministic).")
    args = parser.parse_args()

    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from checkpoint.database import open_pool
    from checkpoint.migrations import migrate

    print(f"machine: {machine()}")
    with postgres_server() as (server_url, _home), scratch_database(server_url) as url:
        pool = open_pool(url)
        old_pool = open_pool(url)
        old_pool._check = ConnectionPool.check_connection  # type: ignore[attr-defined]  # the pre-issue-11 behaviour, for comparison
        migrate(pool)
        with pool.connection() as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[name] for name in ("fsync", "synchronous_commit", "wal_sync_method")}
            conn.execute("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, thread_id text NOT NULL, payload bytea NOT NULL)")
            size = conn.execute("SELECT avg(pg_column_size(c.*))::int AS b FROM checkpoints c").fetchone()["b"] or 0
        print(f"server: {settings}")
        signoff_run(pool, 5)  # warm-up: imports, plans
        with pool.connection() as conn:
            size = conn.execute("SELECT avg(pg_column_size(c.*))::int AS b FROM checkpoints c").fetchone()["b"]
        payload = b"x" * size
        with PostgresSaver.from_conn_string(url) as stock_saver, psycopg.connect(url, autocommit=True) as bare_conn:
            stock_graph = build_graph().compile(checkpointer=stock_saver)
            stock_run(stock_graph, 5)
            count_statements(lambda n: signoff_run(pool, n), lambda n: stock_run(stock_graph, n))
            if args.count_only:
                pool.close()
                old_pool.close()
                return
            plain_pool = ConnectionPool(url, min_size=1, max_size=8, open=True,
                                        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
            pooled_graph = build_graph().compile(checkpointer=PostgresSaver(plain_pool))  # type: ignore[arg-type]
            stock_run(pooled_graph, 5)
            results: dict[str, list[float]] = {"signoff": [], "signoff, old pool check": [], "stock PostgresSaver": [],
                                              "stock PostgresSaver, pool": [], "bare INSERT+commit": []}
            for _ in range(args.repeats):  # interleaved, so a burst of load hits every variant alike
                results["signoff"].append(per_step(lambda n: signoff_run(pool, n), args.steps))
                results["signoff, old pool check"].append(per_step(lambda n: signoff_run(old_pool, n), args.steps))
                results["stock PostgresSaver"].append(per_step(lambda n: stock_run(stock_graph, n), args.steps))
                results["stock PostgresSaver, pool"].append(per_step(lambda n: stock_run(pooled_graph, n), args.steps))
                results["bare INSERT+commit"].append(per_step(lambda n: bare_run(bare_conn, n, payload), args.steps))
            plain_pool.close()
        pool.close()
        old_pool.close()
    stock = statistics.median(results["stock PostgresSaver"])
    print(f"durable step, runs of {args.steps} steps, median of {args.repeats} (min..max), checkpoint row ~{size} bytes:")
    for label, values in results.items():
        med = statistics.median(values)
        print(f"  {label:<26} {med * 1000:6.2f} ms/step  ({min(values) * 1000:.2f}..{max(values) * 1000:.2f})  {med / stock:5.2f}x stock")
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
