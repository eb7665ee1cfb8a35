"""Checkpoint bytes per finished thread, per graph, before and after `signoff db prune` (a script).

Run from the project root:  python tests/benchmarks/prune_bench.py [--threads 5]

Sets up its own PostgreSQL (bench_env) and a scripted OpenAI-compatible server, then runs
--threads real threads of each graph through the CLI, to their gate and, approved, to the end:
support (escalated: classify, agent, ticket, holding reply), revision (two drafts scored 0.5,
then one scored 0.9: three write/review rounds) and research (a plan of three subtasks
researched in parallel, one write/review round). Measures the bytes of each graph's rows in
LangGraph's checkpoint tables (`pg_column_size` of checkpoints, blobs and writes) per thread,
runs `signoff db prune --dry-run` and `signoff db prune` (timed), and measures again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench_env import ROOT, cli_env, machine, postgres_server, scratch_database

SUBTASKS = ["What does a checkpoint contain?", "How do idempotency keys prevent duplicates?", "How does saga compensation work?"]
TEXTS = {"support": "The sync engine corrupts my notes", "revision": "Explain why retries need idempotency keys.",
         "research": "durable workflows"}


def model_server():
    from tests.fault_server import FaultServer, ok

    server = FaultServer().start()
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok("ESCALATE"))
    server.rule("You write short, clear markdown documents", ok("# Retries\n\n" + "Retries repeat a call; keys make that safe. " * 20))
    server.rule("Split the research topic", ok(json.dumps({"subtasks": SUBTASKS})))
    server.rule("Summarise what the passages say", ok("The passages say it is saved state plus keys. " * 5))
    server.rule("Score the draft", ok('{"score": 0.9, "feedback": "Fine."}'))
    return server


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"signoff {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout


def bytes_per_thread(url: str) -> dict[str, tuple[int, float, float]]:
    """graph -> (threads, checkpoint rows per thread, checkpoint-table bytes per thread)."""
    import psycopg

    sql = """
        SELECT t.graph, count(*) AS threads,
               sum((SELECT count(*) FROM checkpoints c WHERE c.thread_id = t.thread_id)) AS checkpoints,
               sum((SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM checkpoints c WHERE c.thread_id = t.thread_id)
                 + (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM checkpoint_blobs b WHERE b.thread_id = t.thread_id)
                 + (SELECT coalesce(sum(pg_column_size(w.*)), 0) FROM checkpoint_writes w WHERE w.thread_id = t.thread_id)) AS bytes
        FROM threads t WHERE t.status = 'finished' GROUP BY t.graph ORDER BY t.graph
    """
    with psycopg.connect(url) as conn:
        return {g: (n, float(c) / n, float(b) / n) for g, n, c, b in conn.execute(sql)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=5, help="threads per graph")
    args = parser.parse_args()

    from tests.fault_server import ok

    print(f"machine: {machine()}")
    with postgres_server() as (server_url, home), scratch_database(server_url) as url:
        server = model_server()
        try:
            env = cli_env(url, home, server.base_url)
            begun = time.perf_counter()
            for graph, text in TEXTS.items():
                for i in range(args.threads):
                    if graph == "revision":  # two rejected drafts first: three write/review rounds
                        server.once("Score the draft", ok('{"score": 0.5, "feedback": "Add an example."}'))
                        server.once("Score the draft", ok('{"score": 0.5, "feedback": "Shorter."}'))
                    tid = f"{graph}-{i}"
                    start = [graph, text, "--thread", tid] + (["--out", str(home / "out")] if graph != "support" else [])
                    cli(env, "start", *start)
                    digest = json.loads(cli(env, "show", tid, "--json"))["digest"]
                    cli(env, "approve", tid, "--expect", digest)
            print(f"ran {args.threads} threads of each graph to the end in {time.perf_counter() - begun:.0f}s")
            before = bytes_per_thread(url)
            dry = json.loads(cli(env, "db", "prune", "--dry-run", "--json"))
            begun = time.perf_counter()
            report = json.loads(cli(env, "db", "prune", "--json"))
            elapsed = time.perf_counter() - begun
            after = bytes_per_thread(url)
        finally:
            server.stop()
    print(f"db prune --dry-run said: {dry['threads']} threads, {dry['bytes']} bytes; db prune freed {report['bytes']} bytes "
          f"({report['rows']}) from {report['threads']} threads in {elapsed:.2f}s (a fresh process, start-up included)")
    print(f"{'graph':<10} {'threads':>7} {'checkpoints/thread':>19} {'bytes/thread before':>20} {'after':>8} {'kept':>6}")
    for graph, (n, rows, size) in before.items():
        _, rows_after, size_after = after[graph]
        print(f"{graph:<10} {n:>7} {rows:>10.1f} -> {rows_after:<5.1f} {size:>20,.0f} {size_after:>8,.0f} {size_after / size:>6.1%}")
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
