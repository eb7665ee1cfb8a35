"""`pending`, `show` and `audit` with 10,000 threads waiting and 100,000 finished (a script).

Run from the project root:  python tests/benchmarks/pending_scale_bench.py [--waiting 10000] [--finished 100000] [--runs 5]

Sets up its own PostgreSQL (bench_env), runs one real support thread to its gate and one to
the end (scripted model server, the product's own run path), then copies them, through the
same tables the product writes, into --waiting threads at their gate and --finished finished
ones: `threads` rows (with the digest and content under review a run stores at its gate),
their `audit_events`, and for every waiting thread its checkpoints, blobs and writes
(`--finished-checkpoints` copies the finished ones' too: millions of rows, slow to create).
Running graphs for 110,000 threads would take days; the rows are what those runs would
leave. Then it times each command as a fresh process, as a person runs it (median of --runs
after one warm-up run), and the listing query alone in this process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench_env import ROOT, cli_env, escalating_model_server, machine, median, postgres_server, scratch_database

GRAPHS = ("support", "revision", "research")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"signoff {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc


def populate(url: str, waiting: int, finished: int, finished_checkpoints: bool) -> None:
    """Copy the two template threads into `waiting` + `finished` threads, in SQL."""
    import psycopg

    clone_rows = """
        INSERT INTO {table} ({columns})
        SELECT {select} FROM {table} x CROSS JOIN generate_series(1, %(n)s) AS g(i) WHERE x.thread_id = %(template)s
    """
    with psycopg.connect(url, autocommit=True) as conn:
        for template, prefix, n, status in (("tpl-waiting", "w", waiting, "waiting"), ("tpl-finished", "f", finished, "finished")):
            # Waiting for up to 30 days, finished up to 90 days ago; graphs in turn.
            span = 30 if status == "waiting" else 90
            conn.execute(
                "INSERT INTO threads (thread_id, graph, status, gate, summary, deadline, deadline_hours, input, created_at, updated_at, digest, review) "
                "SELECT %(prefix)s || '-' || g.i, (ARRAY['support','revision','research'])[1 + g.i %% 3], t.status, t.gate, "
                "t.summary || ' #' || g.i, now() + ((g.i %% 48) - 12) * interval '1 hour', t.deadline_hours, t.input, "
                "now() - (g.i::float8 / %(n)s * %(span)s) * interval '1 day' - interval '1 hour', "
                "now() - (g.i::float8 / %(n)s * %(span)s) * interval '1 day', t.digest, t.review "
                "FROM threads t CROSS JOIN generate_series(1, %(n)s) AS g(i) WHERE t.thread_id = %(template)s",
                {"prefix": prefix, "n": n, "span": span, "template": template},
            )
            tables = ["audit_events"] + (["checkpoints", "checkpoint_blobs", "checkpoint_writes"] if status == "waiting" or finished_checkpoints else [])
            for table in tables:
                columns = [r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'id' "
                    "AND is_generated = 'NEVER' ORDER BY ordinal_position", (table,))]
                select = ", ".join(f"%(prefix)s || '-' || g.i" if c == "thread_id" else f"x.{c}" for c in columns)
                conn.execute(clone_rows.format(table=table, columns=", ".join(columns), select=select),
                             {"n": n, "template": template, "prefix": prefix})
        conn.execute("ANALYZE")


def timed(env: dict[str, str], runs: int, *args: str) -> list[float]:
    times = []
    for i in range(runs + 1):
        begun = time.perf_counter()
        run_cli(env, *args)
        if i:
            times.append(time.perf_counter() - begun)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--finished-checkpoints", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    with postgres_server() as (server_url, home), scratch_database(server_url) as url:
        model = escalating_model_server()
        try:
            env = cli_env(url, home, model.base_url)
            run_cli(env, "start", "support", "The app crashes when I open settings", "--thread", "tpl-waiting")
            run_cli(env, "start", "support", "The app crashes when I open settings", "--thread", "tpl-finished")
            shown = run_cli(env, "show", "tpl-finished", "--json").stdout
            import json

            run_cli(env, "approve", "tpl-finished", "--expect", json.loads(shown)["digest"])
            begun = time.perf_counter()
            populate(url, args.waiting, args.finished, args.finished_checkpoints)
            print(f"created {args.waiting} waiting and {args.finished} finished threads in {time.perf_counter() - begun:.0f}s "
                  f"(checkpoints copied for the waiting{' and finished' if args.finished_checkpoints else ''} threads)")
            import psycopg

            with psycopg.connect(url) as conn:
                counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("threads", "checkpoints", "checkpoint_blobs", "checkpoint_writes", "audit_events")}
                size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
            print(f"rows: {counts}; database {size}")

            # The query alone, in this process (no interpreter start-up, no imports).
            from checkpoint import listing
            from checkpoint.database import open_pool

            pool = open_pool(url)
            try:
                query = []
                for _ in range(20):
                    begun = time.perf_counter()
                    page = listing.waiting(pool)
                    query.append(time.perf_counter() - begun)
                assert page.total == args.waiting + 1, page.total
                with pool.connection() as conn:
                    plan = "\n    ".join(r["QUERY PLAN"] for r in conn.execute(
                        "EXPLAIN ANALYZE SELECT * FROM threads WHERE status = 'waiting' ORDER BY updated_at, thread_id LIMIT 100"))
                # What the listing did before it read the threads table alone: load each waiting thread's checkpoint.
                from console.pending_display import review_digests

                sample = listing.waiting(pool, limit=300).rows
                begun = time.perf_counter()
                review_digests(pool, sample)
                old_per_thread = (time.perf_counter() - begun) / len(sample)
            finally:
                pool.close()
            print(f"listing query in-process (count + first page of 100), median of 20: {statistics.median(query) * 1000:.1f} ms")
            print(f"  plan of the page:\n    {plan}")
            print(f"the old listing, a checkpoint load per waiting thread: {old_per_thread * 1000:.1f} ms each, "
                  f"so {old_per_thread * (args.waiting + 1):.0f} s for all {args.waiting + 1} in this process")

            waiting_id, finished_id = f"w-{args.waiting // 2}", f"f-{args.finished // 2}"
            commands = [
                ("pending", ("pending",), 1.0),
                ("pending --json", ("pending", "--json"), 1.0),
                ("pending --graph research --older-than 7d --limit 20", ("pending", "--graph", "research", "--older-than", "7d", "--limit", "20"), 1.0),
                (f"pending --limit {args.waiting + 1} --json (every one)", ("pending", "--limit", str(args.waiting + 1), "--json"), None),
                (f"show {waiting_id}", ("show", waiting_id), 1.0),
                (f"show {finished_id}", ("show", finished_id), 1.0),
                (f"audit {finished_id}", ("audit", finished_id), 1.0),
            ]
            print(f"{'command (fresh process each run)':<58} {'median':>8} {'min':>8} {'max':>8}  target")
            for label, argv, target in commands:
                times = timed(env, args.runs, *argv)
                verdict = "" if target is None else f"< {target:.1f} s: {'met' if median(times) < target else 'NOT met'}"
                print(f"{label:<58} {median(times):>7.3f}s {min(times):>7.3f}s {max(times):>7.3f}s  {verdict}")
        finally:
            model.stop()
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
