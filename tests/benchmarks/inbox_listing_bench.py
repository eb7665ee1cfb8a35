"""The inbox's lists against `pending` with 10,000 threads (a script).

Run from the project root:  python tests/benchmarks/inbox_listing_bench.py [--threads 10000] [--runs 50]

Sets up its own PostgreSQL (bench_env) and fills the threads table with --threads rows in the
mix a busy deployment has (40% waiting at a gate, 10% running or queued, 35% finished, 15%
failed; one in twenty decided by an expired deadline), with summaries drawn from real support
messages, briefs and topics. Only `threads` and `approvals` are filled: neither listing reads
anything else. Then, in this process, it times `pending`'s query (checkpoint.listing.waiting:
count + first page) and the inbox's (checkpoint.browse.threads_page: count + one page) for
each list, a graph-and-age filter, a text search, a deep page, and a whole /inbox page
rendered by the web app; median of --runs, and each as a ratio to `pending`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_env import machine, postgres_server, scratch_database

WORDS = ["I was charged twice this month", "The sync engine corrupts my notes", "How do I export my data?",
         "Refund my last order please", "Write a launch note for the new editor", "Compare vector databases for search",
         "My invoice shows the wrong address", "Notes do not sync between my phone and laptop"]


def populate(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO threads (thread_id, graph, status, gate, summary, deadline, created_at, updated_at, digest, review) "
            "SELECT 't-' || g.i, (ARRAY['support','revision','research'])[1 + g.i %% 3], s.status, "
            "CASE WHEN s.status = 'waiting' THEN 'review' END, (%(words)s::text[])[1 + g.i %% %(k)s] || ' #' || g.i, "
            "CASE WHEN s.status = 'waiting' THEN now() + interval '1 day' END, "
            "now() - (g.i::float8 / %(n)s * 30) * interval '1 day' - interval '1 hour', now() - (g.i::float8 / %(n)s * 30) * interval '1 day', "
            "CASE WHEN s.status = 'waiting' THEN md5(g.i::text) END, CASE WHEN s.status = 'waiting' THEN 'draft ' || g.i END "
            "FROM generate_series(1, %(n)s) g(i) CROSS JOIN LATERAL (SELECT CASE WHEN g.i %% 20 < 8 THEN 'waiting' "
            "  WHEN g.i %% 20 < 9 THEN 'running' WHEN g.i %% 20 < 10 THEN 'queued' WHEN g.i %% 20 < 17 THEN 'finished' ELSE 'failed' END AS status) s",
            {"n": n, "words": WORDS, "k": len(WORDS)})
        conn.execute("INSERT INTO approvals (thread_id, gate, checkpoint_id, decision, actor) "
                     "SELECT thread_id, 'review', 'c-' || thread_id, CASE WHEN random() < 0.05 THEN 'expired' ELSE 'approved' END, 'bench' "
                     "FROM threads WHERE status = 'finished'")
        conn.execute("ANALYZE")


def timed(runs: int, call) -> float:
    call()
    times = []
    for _ in range(runs):
        begun = time.perf_counter()
        call()
        times.append(time.perf_counter() - begun)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with postgres_server() as (server_url, home), scratch_database(server_url) as url:
        from checkpoint import browse, listing
        from checkpoint.database import open_pool
        from checkpoint.migrations import migrate

        pool = open_pool(url)
        try:
            migrate(pool)
            populate(url, args.threads)
            deep = browse.threads_page(pool, browse.Filters(status="finished"), limit=100 * browse.PAGE_SIZE // 2)
            deep_key = deep.next_key
            cases = [
                ("pending (waiting, first 100)", lambda: listing.waiting(pool)),
                ("pending --limit 50 (the inbox's page)", lambda: listing.waiting(pool, limit=browse.PAGE_SIZE)),
                ("inbox waiting", lambda: browse.threads_page(pool, browse.Filters(status="waiting"))),
                ("inbox running", lambda: browse.threads_page(pool, browse.Filters(status="running"))),
                ("inbox finished", lambda: browse.threads_page(pool, browse.Filters(status="finished"))),
                ("inbox failed", lambda: browse.threads_page(pool, browse.Filters(status="failed"))),
                ("inbox expired", lambda: browse.threads_page(pool, browse.Filters(status="expired"))),
                ("inbox all", lambda: browse.threads_page(pool, browse.Filters(status="all"))),
                ("inbox research, older than 7d", lambda: browse.threads_page(
                    pool, browse.valid_filters("finished", "research", "7d", None, None))),
                ("inbox search 'charged' (all)", lambda: browse.threads_page(pool, browse.valid_filters("all", None, None, None, "charged"))),
                ("inbox search thread id", lambda: browse.threads_page(pool, browse.valid_filters("all", None, None, None, "t-4242"))),
                ("inbox finished, page 50", lambda: browse.threads_page(pool, browse.Filters(status="finished"), after=deep_key)),
            ]
            results = [(name, timed(args.runs, call)) for name, call in cases]
            page_html = web_page(pool, args.runs)
            whole_pending = pending_in_process(pool, args.runs)
        finally:
            pool.close()
    base = results[0][1]
    print(f"{args.threads} threads; median of {args.runs} runs, in this process")
    for name, seconds in results:
        print(f"  {name:<34} {seconds * 1000:7.2f} ms   x{seconds / base:.2f} of pending")
    print(f"  {'pending as a whole (query, stages, table)':<34} {whole_pending * 1000:7.2f} ms   (what `pending` does after start-up)")
    for name, seconds in (("/inbox?status=waiting (HTML page)", page_html[0]), ("/inbox?status=finished (HTML page)", page_html[1])):
        print(f"  {name:<34} {seconds * 1000:7.2f} ms   x{seconds / whole_pending:.2f} of pending as a whole")


def pending_in_process(pool, runs: int) -> float:
    """`signoff pending` without the interpreter's start-up: its query, the approval stage of
    each waiting thread, and its table (written to nowhere)."""
    import io

    from console import terminal
    from console.pending_display import print_pending, waiting_threads

    terminal.out.file = io.StringIO()

    def run() -> None:
        terminal.out.file.seek(0)
        print_pending(waiting_threads(pool, limit=100, graph=None, older_than=None), limit=100, filtered=False, as_json=False)

    return timed(runs, run)


def web_page(pool, runs: int) -> tuple[float, float]:
    """Whole inbox pages through the web app (session, query, template): waiting, finished."""
    import re

    from starlette.testclient import TestClient

    from checkpoint import tokens
    from web.app import WebContext, create_app

    token = tokens.create(pool, "bench reviewer")
    with TestClient(create_app(WebContext(pool=pool, key=b"k" * 40, public_url="http://127.0.0.1")), base_url="http://127.0.0.1") as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)[1]
        client.post("/login", data={"token": token, "csrf": csrf, "next": "/inbox"})
        return (timed(runs, lambda: client.get("/inbox?status=waiting").raise_for_status()),
                timed(runs, lambda: client.get("/inbox?status=finished").raise_for_status()))


if __name__ == "__main__":
    main()
