"""LangGraph's HTTP API served by Signoff (`signoff serve` + `signoff worker`, durable on
PostgreSQL) against LangGraph's own dev server (`langgraph dev`, in memory), driven by the same
unmodified `langgraph-sdk` client, on the same small graph with one gate: create a thread, run
it to its interrupt (runs.wait), resume it to the end (runs.wait with command.resume). Per
thread: median and p95 latency; throughput at 1, 10 and 50 concurrent clients; errors.

Each server runs as its defaults have it: `signoff worker` 10 runs at once (`--jobs`), as
langgraph-runtime-pg; `langgraph dev` its own default. `--jobs 50` runs 50 at once: on two
cores that costs the worker about a third more CPU per run (threads contending for the GIL
in LangGraph's step executor), so fewer threads per second, not more.

`langgraph dev` comes from a virtualenv of its own (never the project's):
    python -m venv /tmp/lgdev-venv && /tmp/lgdev-venv/bin/pip install "langgraph-cli[inmem]"
    python tests/benchmarks/api_bench.py [--lgdev /tmp/lgdev-venv/bin/langgraph] [--threads 1:10,10:30,50:100]

A third server, when installed: LangGraph's open PostgreSQL runtime (`langgraph-runtime-pg`,
the langgraph-api server with runs queued and checkpointed in PostgreSQL, streams through
Redis), durable like Signoff, on a scratch database of the same PostgreSQL, with a Redis of
its own (Debian's `redis-server`), started through `langgraph_api.cli.run_server` with
runtime edition "pg" (the CLI's `--runtime-edition postgres` looks for a package
`langgraph_runtime_postgres`, which does not exist) and a postgresql:// URI (its Alembic
migrations take no key=value conninfo). No licence key is asked for:
    python -m venv /tmp/lgpg-venv && /tmp/lgpg-venv/bin/pip install langgraph-runtime-pg
    apt-get install -y redis-server
    python tests/benchmarks/api_bench.py [--lgpg /tmp/lgpg-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_env import ROOT, cli_env, machine, postgres_server, scratch_database

GRAPH = '''
from typing import TypedDict
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class State(TypedDict, total=False):
    request: str
    answer: str
    outcome: str


def prepare(state: State) -> dict:
    return {"request": state["request"].strip()}


def ask(state: State) -> dict:
    return {"answer": interrupt({"question": "approve " + state["request"] + "?"})}


def finish(state: State) -> dict:
    return {"outcome": "done: " + str(state["answer"])}


graph = (StateGraph(State).add_node("prepare", prepare).add_node("ask", ask).add_node("finish", finish)
         .add_edge(START, "prepare").add_edge("prepare", "ask").add_edge("ask", "finish").add_edge("finish", END).compile())
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def one_thread(client: Any) -> float:
    started = time.perf_counter()
    thread = client.threads.create()["thread_id"]
    asked = client.runs.wait(thread, "gate", input={"request": " one laptop "})
    interrupt = asked["__interrupt__"][0]
    done = client.runs.wait(thread, "gate", command={"resume": {interrupt["id"]: "yes"}})
    if done.get("outcome") != "done: yes":
        raise RuntimeError(f"unexpected result {done}")
    return time.perf_counter() - started


def measure(url: str, api_key: str | None, clients: int, threads: int) -> dict[str, Any]:
    from langgraph_sdk import get_sync_client

    made = [get_sync_client(url=url, api_key=api_key, timeout=300) for _ in range(clients)]
    one_thread(made[0])  # warm: imports, compiled graphs, connections
    errors: list[str] = []
    latencies: list[float] = []

    def work(i: int) -> None:
        try:
            latencies.append(one_thread(made[i % clients]))
        except Exception as exc:  # noqa: BLE001 - counted, reported
            errors.append(f"{exc.__class__.__name__}: {exc}"[:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(threads)))
    wall = time.perf_counter() - started
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else float("nan")
    return {"clients": clients, "threads": threads, "median_ms": round(statistics.median(latencies) * 1000) if latencies else None,
            "p95_ms": round(p95 * 1000) if latencies else None, "threads_per_s": round(len(latencies) / wall, 2),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def spawn(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT)


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU the process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def runtime_pg(python: str, url: str, project: Path, levels: list[tuple[int, ...]], jobs: int) -> list[dict[str, Any]]:
    """langgraph-runtime-pg on the database at `url`, with a Redis of its own, measured."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    uri = f"postgresql://{parts.get('user', 'postgres')}@/{parts['dbname']}?host={parts.get('host', '')}" + \
        (f"&port={parts['port']}" if parts.get("port") else "")
    redis_port, port = free_port(), free_port()
    redis = spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                  project, {"PATH": os.environ.get("PATH", "")}, project / "redis.log")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"DATABASE_URI": uri, "REDIS_URI": f"redis://127.0.0.1:{redis_port}", "LANGSMITH_TRACING": "false",
                "LANGGRAPH_NO_TELEMETRY": "1", "PYTHONPATH": str(project)})
    launcher = ("import json, os, sys; from langgraph_api.cli import run_server; "
                "run_server('127.0.0.1', int(sys.argv[1]), False, json.load(open('langgraph.json'))['graphs'], "
                "n_jobs_per_worker=int(sys.argv[2]), runtime_edition='pg', __redis_uri__=os.environ['REDIS_URI'], "
                "__database_uri__=os.environ['DATABASE_URI'], __migrations_path__=None)")
    server = spawn([python, "-c", launcher, str(port), str(jobs)], project, env, project / "lgpg.log")
    rows = []
    try:
        wait_port(port)
        time.sleep(2)
        for c, n in levels:
            before = cpu_seconds(server), cpu_seconds(redis)
            row = measure(f"http://127.0.0.1:{port}", None, c, n)
            row["cpu"] = f"server {cpu_seconds(server) - before[0]:.1f} s, redis {cpu_seconds(redis) - before[1]:.1f} s"
            rows.append(row)
    finally:
        stop(server)
        stop(redis)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lgdev", default="/tmp/lgdev-venv/bin/langgraph")
    parser.add_argument("--threads", default="1:10,10:30,50:100", help="clients:threads,...")
    parser.add_argument("--lgpg", default="/tmp/lgpg-venv/bin/python", help="the Python of a venv with langgraph-runtime-pg")
    parser.add_argument("--jobs", type=int, default=10, help="runs at once: the Signoff worker's --concurrency and "
                                                             "langgraph-runtime-pg's jobs per worker (10: both defaults)")
    parser.add_argument("--only", choices=["signoff", "langgraph-dev", "langgraph-runtime-pg"], default=None)
    args = parser.parse_args()
    levels = [tuple(int(x) for x in level.split(":")) for level in args.threads.split(",")]
    project = Path(tempfile.mkdtemp(prefix="api-bench-"))
    (project / "bench_graph.py").write_text(GRAPH)
    (project / "langgraph.json").write_text(json.dumps({"dependencies": ["."], "graphs": {"gate": "./bench_graph.py:graph"}}))
    results: dict[str, list[dict[str, Any]]] = {}

    if args.only in (None, "signoff"):
        with postgres_server() as (server, home), scratch_database(server) as url:
            env = {**cli_env(url, home, "http://127.0.0.1:9/v1"), "PYTHONPATH": str(ROOT), "SIGNOFF_SECRET_KEY": "b" * 40}
            from checkpoint.database import open_pool
            from checkpoint.migrations import migrate
            from checkpoint.tokens import create

            with open_pool(url) as pool:
                migrate(pool)
                token = create(pool, "bench")
            port = free_port()
            serve = spawn([sys.executable, "-m", "cli", "serve", "--port", str(port)], project, env, project / "serve.log")
            worker = spawn([sys.executable, "-m", "cli", "worker", "--concurrency", str(args.jobs)], project, env, project / "worker.log")
            try:
                wait_port(port)
                time.sleep(2)  # the worker registers
                results["signoff"] = []
                for c, n in levels:
                    before = cpu_seconds(serve), cpu_seconds(worker)
                    row = measure(f"http://127.0.0.1:{port}/langgraph", token, c, n)
                    row["cpu"] = f"serve {cpu_seconds(serve) - before[0]:.1f} s, worker {cpu_seconds(worker) - before[1]:.1f} s"
                    results["signoff"].append(row)
            finally:
                stop(serve)
                stop(worker)

    if args.only in (None, "langgraph-dev") and Path(args.lgdev).exists():
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        dev = spawn([args.lgdev, "dev", "--port", str(port), "--no-browser", "--no-reload", "--config", str(project / "langgraph.json")],
                    project, {**env, "LANGSMITH_TRACING": "false", "LANGGRAPH_NO_TELEMETRY": "1"}, project / "lgdev.log")
        try:
            wait_port(port)
            time.sleep(2)
            results["langgraph dev"] = []
            for c, n in levels:
                before = cpu_seconds(dev)
                row = measure(f"http://127.0.0.1:{port}", None, c, n)
                row["cpu"] = f"server {cpu_seconds(dev) - before:.1f} s"
                results["langgraph dev"].append(row)
        finally:
            stop(dev)

    if args.only in (None, "langgraph-runtime-pg") and Path(args.lgpg).exists() and shutil.which("redis-server"):
        with postgres_server() as (server, _), scratch_database(server, "lgpg") as url:
            results["langgraph-runtime-pg"] = runtime_pg(args.lgpg, url, project, levels, args.jobs)

    print(f"machine: {machine()}")
    print("| server | clients | threads | median ms/thread | p95 ms/thread | threads/s | errors | CPU (incl. warm-up) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['clients']} | {r['threads']} | {r['median_ms']} | {r['p95_ms']} | {r['threads_per_s']} | {r['errors']} | {r.get('cpu', '')} |")
    for name, rows in results.items():
        for r in rows:
            if r["first_error"]:
                print(f"{name} at {r['clients']} clients, first error: {r['first_error']}")


if __name__ == "__main__":
    main()
