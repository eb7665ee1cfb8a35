"""Benchmark `signoff worker` (a script, not a pytest test; one run, figures as ratios).

Run from the project root:  python tests/benchmarks/worker_bench.py [--threads 500] [--concurrency 100]

Uses its own embedded PostgreSQL in a throwaway SIGNOFF_HOME (or DATABASE_URL if set; a new
database per measurement either way) and a scripted OpenAI-compatible server in this process
(tests/fault_server.py) that answers every call after a fixed latency. Support threads run
classify -> technical_agent -> escalate -> gate, two model calls each. Measures:

1. makespan of N threads submitted at once (as `start --detach` does) to one worker at
   --concurrency C, against the ideal N x (2 x latency) / C; the worker's peak RSS (VmHWM);
2. pickup latency: from an approve's hand-over returning (decision recorded, job queued) to
   the gate node starting in the worker (timestamps on the same host's clock);
3. throughput of two worker processes against one on the same N threads, with an instant
   model (so the bottleneck is the worker's own CPU work, not the model);
4. durable step overhead: a worker-run thread (the run, in the worker, to its gate) against
   stock LangGraph (`PostgresSaver`, `durability="sync"`, same graph, models and stream modes)
   in this process, sequentially, medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # runnable without installing signoff

import psycopg  # noqa: E402

from checkpoint import jobs  # noqa: E402
from checkpoint.database import open_pool  # noqa: E402
from checkpoint.migrations import migrate  # noqa: E402
from graphs.registry import SUPPORT  # noqa: E402
from tests.fault_server import FaultServer, ok  # noqa: E402
from tests.scripted import CANNOT_ANSWER  # noqa: E402

MESSAGE = "The sync engine corrupts my notes"


def scripted_server(latency: float) -> FaultServer:
    server = FaultServer().start()
    server.rule("Classify the customer message", ok('{"intent": "technical"}', delay=latency))
    server.rule("technical support agent", ok(CANNOT_ANSWER, delay=latency))
    return server


@contextmanager
def database(server_url: str) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.replace("/postgres?", f"/{name}?") if "/postgres?" in server_url else server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_env(url: str, server: FaultServer, home: Path, model_concurrency: int) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:bench",
            "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "bench", "SIGNOFF_MODEL_CONCURRENCY": str(model_concurrency),
            "PYTHONUNBUFFERED": "1"}


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--concurrency", str(concurrency)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    else:
        raise SystemExit(f"worker did not start (exit {proc.wait()})")
    # keep reading so the pipe never fills
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc


def stop_worker(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def profiled(pid: int, py_spy: str | None, out: str) -> Iterator[None]:
    """Sample the worker with py-spy (all threads, GIL holders only) while the block runs."""
    if not py_spy:
        yield
        return
    spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--gil", "--format", "raw", "--output", out, "--rate", "200", "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        print(f"  py-spy samples (collapsed stacks) in {out}")


def submit_all(pool, prefix: str, n: int) -> list[str]:
    tids = [f"{prefix}-{i}" for i in range(n)]
    graph_input = SUPPORT.make_input(MESSAGE, {})
    for tid in tids:
        jobs.submit(pool, tid, "support", MESSAGE, graph_input=graph_input, deadline_hours=24, actor="bench")
    return tids


def wait_waiting(pool, n: int, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with pool.connection() as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE status = 'waiting') AS w, count(*) FILTER (WHERE status = 'failed') AS f FROM threads").fetchone()
        if row["f"]:
            raise SystemExit(f"{row['f']} threads failed")
        if row["w"] >= n and not jobs.counts(pool).get("doing") and not jobs.counts(pool).get("todo"):
            return
        time.sleep(0.02)
    raise SystemExit("timed out")


def makespan_and_pickup(server_url: str, home: Path, n: int, concurrency: int, latency: float, approvals: int,
                        py_spy: str | None = None) -> dict[str, float]:
    from runtime.thread_runner import ThreadRunner

    server = scripted_server(latency)
    with database(server_url) as url:
        pool = open_pool(url, max_size=4)
        migrate(pool)
        from nodes.knowledge import ensure_loaded

        ensure_loaded(pool)
        proc = start_worker(worker_env(url, server, home, concurrency), concurrency)
        try:
            cpu = cpu_seconds(proc.pid)
            with profiled(proc.pid, py_spy, str(ROOT / f"worker-profile-{latency:g}s.txt")):
                started = time.monotonic()
                tids = submit_all(pool, "m", n)
                wait_waiting(pool, n)
                makespan = time.monotonic() - started
            cpu = cpu_seconds(proc.pid) - cpu
            rss = peak_rss_mb(proc.pid)

            runner = ThreadRunner(pool, SUPPORT)
            waits = []
            for tid in tids[:approvals]:
                runner.decide(tid, "approved", actor="bench")
                jobs.enqueue(pool, tid, "decision")
                returned = time.time()
                while True:
                    with pool.connection() as conn:
                        row = conn.execute(
                            "SELECT (event->>'ts')::float8 AS ts FROM progress_events WHERE thread_id = %s "
                            "AND event->>'event' = 'node_start' AND event->>'node' = 'review'", (tid,)).fetchone()
                    if row:
                        waits.append(row["ts"] - returned)
                        break
                    time.sleep(0.002)
        finally:
            stop_worker(proc)
            pool.close()
            server.stop()
    waits.sort()
    ideal = n * 2 * latency / concurrency
    return {"makespan": makespan, "ideal": ideal, "rss_mb": rss, "cpu_per_thread": cpu / n, "p50": statistics.median(waits), "p99": waits[min(len(waits) - 1, int(len(waits) * 0.99))]}


def throughput(server_url: str, home: Path, n: int, concurrency: int, processes: int) -> float:
    server = scripted_server(0.0)
    with database(server_url) as url:
        pool = open_pool(url, max_size=4)
        migrate(pool)
        from nodes.knowledge import ensure_loaded

        ensure_loaded(pool)
        procs = [start_worker(worker_env(url, server, home, concurrency), concurrency) for _ in range(processes)]
        try:
            started = time.monotonic()
            submit_all(pool, "t", n)
            wait_waiting(pool, n)
            elapsed = time.monotonic() - started
            with pool.connection() as conn:
                per_worker = [r["n"] for r in conn.execute("SELECT count(*) AS n FROM jobs GROUP BY worker_id")]
        finally:
            for proc in procs:
                stop_worker(proc)
            pool.close()
            server.stop()
    print(f"  {processes} worker(s): {n} threads in {elapsed:.1f}s, jobs per worker {per_worker}")
    return n / elapsed


def overhead(server_url: str, home: Path, runs: int) -> tuple[float, float]:
    """Median seconds per thread to its gate: worker-run (inside the worker) vs stock LangGraph."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from checkpoint.settings import Settings
    from nodes.context import SignoffContext
    from nodes.models import registry_from_settings

    server = scripted_server(0.0)
    with database(server_url) as url:
        pool = open_pool(url, max_size=4)
        migrate(pool)
        from nodes.knowledge import ensure_loaded

        ensure_loaded(pool)
        env = worker_env(url, server, home, 4)
        # stock: the same graph, models and stream modes, plain PostgresSaver, durability="sync"
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(("SIGNOFF", "OPENAI", "DATABASE"))})
        context = SignoffContext(models=registry_from_settings(settings), pool=pool)
        graph = SUPPORT.build().compile(checkpointer=PostgresSaver(pool), interrupt_before=list(SUPPORT.gates))  # type: ignore[arg-type]
        stock = []
        for i in range(runs + 3):
            config = {"configurable": {"thread_id": f"stock-{i}"}}
            begun = time.perf_counter()
            for _ in graph.stream(SUPPORT.make_input(MESSAGE, {}), config, context=context, durability="sync", stream_mode=["tasks", "messages", "custom"]):
                pass
            if i >= 3:  # warm-up runs left out, as for the worker
                stock.append(time.perf_counter() - begun)

        proc = start_worker(env, 1)
        worker = []
        try:
            for i in range(runs + 3):
                tid = f"w-{i}"
                submit_all(pool, tid, 1)
                wait_waiting(pool, i + 1)
                with pool.connection() as conn:
                    ts = {r["kind"]: r["ts"] for r in conn.execute(
                        "SELECT event->>'event' AS kind, (event->>'ts')::float8 AS ts FROM progress_events "
                        "WHERE thread_id = %s AND event->>'event' IN ('run_started', 'stop')", (f"{tid}-0",))}
                if i >= 3:
                    worker.append(ts["stop"] - ts["run_started"])
        finally:
            stop_worker(proc)
            pool.close()
            server.stop()
    return statistics.median(worker), statistics.median(stock)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per scripted model call in measurement 1")
    parser.add_argument("--approvals", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", default="1234")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: sample the worker during measurement 1 (pip install py-spy)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        from checkpoint.embedded import embedded_url

        server_url = embedded_url(home)
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; PostgreSQL {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}")
    try:
        if "1" in args.only:
            r = makespan_and_pickup(server_url, home, args.threads, args.concurrency, args.latency, args.approvals, args.py_spy)
            print(f"1. {args.threads} threads, --concurrency {args.concurrency}, {args.latency}s per model call: makespan {r['makespan']:.1f}s, "
                  f"ideal {r['ideal']:.1f}s, ratio {r['makespan'] / r['ideal']:.2f}x; worker peak RSS {r['rss_mb']:.0f} MB; "
                  f"worker CPU (user+sys) {r['cpu_per_thread'] * 1000:.1f} ms per thread; load average {os.getloadavg()[0]:.1f}")
            print(f"2. pickup, approve hand-over returned -> gate node started in the worker ({args.approvals} approvals): "
                  f"p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms")
        if "3" in args.only:
            one = throughput(server_url, home, args.threads, args.concurrency, 1)
            two = throughput(server_url, home, args.threads, args.concurrency, 2)
            print(f"3. instant model, {args.threads} threads: 1 worker {one:.1f} threads/s, 2 workers {two:.1f} threads/s, ratio {two / one:.2f}x")
        if "4" in args.only:
            worker, stock = overhead(server_url, home, args.runs)
            print(f"4. one support thread to its gate, median of {args.runs}: worker-run {worker * 1000:.0f} ms, "
                  f"stock PostgresSaver durability=sync {stock * 1000:.0f} ms, ratio {worker / stock:.2f}x")
    finally:
        if not os.environ.get("DATABASE_URL"):
            from checkpoint.embedded import stop_embedded

            stop_embedded(home)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
