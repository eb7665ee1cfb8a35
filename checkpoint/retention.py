"""Bounded storage: prune the checkpoints of finished threads (`signoff db prune`),
and the worker's own rows of them (closed jobs, progress events but the last stop).

Every step of a run saves a checkpoint (`durability="sync"`), and a finished thread keeps all
of them, so storage grows with every step ever run. A finished thread only needs its last
checkpoint (what `show` reads); the history before it is deleted here, with its closed jobs
and its progress events except the last stop (what `watch` replays for a finished thread).
Threads, decisions, audit events and side-effect rows (tickets, outbox, documents) are never
touched, nor anything of a thread that is not finished.

The deleting is LangGraph's own `PostgresSaver.prune(strategy="keep_latest")` (keeps the
latest checkpoint of each namespace with its pending writes and the blobs it references,
each thread in its own REPEATABLE READ transaction). What Signoff adds is the choice of
threads, which is what makes it safe to run beside live runs: only threads the threads table
says are `finished` (a terminal state: no run, gate or decision ever writes to one again),
checked again right before each is pruned, so a running, queued, failed or waiting thread is
never touched. A second prune of the same thread at the same moment makes one of them skip
it (LangGraph raises a serialization failure or deadlock for it; retrying later is safe).

`prune_finished` is what a worker calls for automatic pruning (with a `limit` per sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import psycopg
from psycopg_pool import ConnectionPool

#: Threads per page of candidates: one usage query before and after each page.
PAGE = 200

#: The checkpoint tables LangGraph's PostgresSaver writes, and what `keep_latest` deletes there.
CHECKPOINT_TABLES = ("checkpoints", "checkpoint_writes", "checkpoint_blobs")
#: The worker's own rows of a finished thread: its closed jobs, and its progress
#: events but the last stop (what `watch` then replays: how the thread ended).
WORKER_TABLES = ("jobs", "progress_events")

#: The rows of WORKER_TABLES a prune deletes for the threads %(ids)s, each with its size, and
#: only while the thread is still finished (checked in the same statement).
_WORKER_ROWS = {
    "jobs": "SELECT j.id, pg_column_size(j.*) AS b FROM jobs j JOIN threads t USING (thread_id) "
            "WHERE j.thread_id = ANY(%(ids)s) AND t.status = 'finished' AND j.status IN ('done', 'failed')",
    "progress_events": "SELECT e.id, pg_column_size(e.*) AS b FROM progress_events e JOIN threads t USING (thread_id) "
                       "WHERE e.thread_id = ANY(%(ids)s) AND t.status = 'finished' AND e.id <> coalesce((SELECT max(s.id) "
                       "FROM progress_events s WHERE s.thread_id = e.thread_id AND s.event->>'event' = 'stop'), -1)",
}


@dataclass
class PruneReport:
    """What a prune deleted (or, with dry_run, would delete): rows per checkpoint table and
    their bytes (`pg_column_size` of the rows: the space PostgreSQL can reuse for new rows)."""

    dry_run: bool
    threads: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKPOINT_TABLES + WORKER_TABLES, 0))
    bytes: int = 0
    #: threads left alone because another transaction changed them meanwhile (retry later)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "threads": self.threads, "rows": dict(self.rows),
                "bytes": self.bytes, "skipped": list(self.skipped)}


def prune_finished(pool: ConnectionPool, *, older_than: timedelta = timedelta(0), dry_run: bool = False,
                   limit: int | None = None, on_page: Callable[[PruneReport], None] | None = None) -> PruneReport:
    """Delete every checkpoint but the last of each thread that finished at least `older_than`
    ago (by the database's clock), and its closed jobs and progress events but the last stop;
    at most `limit` threads when given. `dry_run` measures what would go and deletes nothing.
    `on_page` is told the running totals after each page."""
    from langgraph.checkpoint.postgres import PostgresSaver

    saver = PostgresSaver(pool)  # type: ignore[arg-type]
    report = PruneReport(dry_run=dry_run)
    after: tuple[object, str] | None = None
    while limit is None or report.threads < limit:
        size = PAGE if limit is None else min(PAGE, limit - report.threads)
        page, after = _prunable_page(pool, older_than, after, size)
        if not page:
            break
        if dry_run:
            _add(report, _usage(pool, page, unkept_only=True), len(page))
            _add(report, _worker_rows(pool, page, delete=False), 0)
        else:
            before = _usage(pool, page)
            done = sum(_prune_one(pool, saver, thread_id, report) for thread_id in page)
            after_prune = _usage(pool, page)
            # Measured over the page before and after: threads left alone count as nothing.
            _add(report, {t: (before[t][0] - after_prune[t][0], before[t][1] - after_prune[t][1]) for t in before}, done)
            _add(report, _worker_rows(pool, page, delete=True), 0)
        if on_page is not None:
            on_page(report)
    return report


def _prunable_page(pool: ConnectionPool, older_than: timedelta, after: tuple[object, str] | None,
                   size: int) -> tuple[list[str], tuple[object, str] | None]:
    """The next `size` finished threads (keyset-paged by when they finished, oldest first) with
    anything to prune (a second checkpoint), and where the page ended."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT t.thread_id, t.updated_at FROM threads t WHERE t.status = 'finished' AND t.updated_at <= now() - %s "
            "AND (%s::timestamptz IS NULL OR (t.updated_at, t.thread_id) > (%s::timestamptz, %s::text)) "
            "AND (EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = t.thread_id OFFSET 1) "
            "  OR EXISTS (SELECT 1 FROM jobs j WHERE j.thread_id = t.thread_id AND j.status IN ('done', 'failed')) "
            "  OR EXISTS (SELECT 1 FROM progress_events e WHERE e.thread_id = t.thread_id AND e.id <> coalesce((SELECT max(s.id) "
            "     FROM progress_events s WHERE s.thread_id = t.thread_id AND s.event->>'event' = 'stop'), -1))) "
            "ORDER BY t.updated_at, t.thread_id LIMIT %s",
            (older_than, after[0] if after else None, after[0] if after else None, after[1] if after else None, size),
            prepare=False,
        ).fetchall()
    if not rows:
        return [], after
    return [r["thread_id"] for r in rows], (rows[-1]["updated_at"], rows[-1]["thread_id"])


def _prune_one(pool: ConnectionPool, saver: object, thread_id: str, report: PruneReport) -> bool:
    """Prune one thread's checkpoints if it is still finished; False if it was left alone."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT status, EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = t.thread_id OFFSET 1) AS history "
            "FROM threads t WHERE thread_id = %s", (thread_id,)).fetchone()
    if row is None or row["status"] != "finished":
        return False
    if not row["history"]:
        return True  # only its worker rows to prune
    try:
        saver.prune([thread_id], strategy="keep_latest")  # type: ignore[attr-defined]
    except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected, NotImplementedError):
        # Another prune (or a DeltaChannel graph, which keep_latest refuses) got there: skip it.
        report.skipped.append(thread_id)
        return False
    return True


def _worker_rows(pool: ConnectionPool, thread_ids: list[str], *, delete: bool) -> dict[str, tuple[int, int]]:
    """(rows, bytes) of the worker tables a prune takes from these threads; deleted if `delete`.
    One statement per table, which checks again that each thread is finished."""
    usage = {}
    with pool.connection() as conn:
        for table, rows in _WORKER_ROWS.items():
            if delete:
                sql = (f"WITH gone AS (DELETE FROM {table} x USING ({rows}) r WHERE x.id = r.id RETURNING r.b) "
                       "SELECT count(*) AS n, coalesce(sum(b), 0) AS b FROM gone")
            else:
                sql = f"SELECT count(*) AS n, coalesce(sum(b), 0) AS b FROM ({rows}) r"
            r = conn.execute(sql, {"ids": thread_ids}, prepare=False).fetchone()
            usage[table] = (int(r["n"]), int(r["b"]))
    return usage


def _usage(pool: ConnectionPool, thread_ids: list[str], *, unkept_only: bool = False) -> dict[str, tuple[int, int]]:
    """(rows, bytes) per checkpoint table for these threads; `unkept_only`: only the rows
    keep_latest deletes (checkpoints but the latest per namespace, their writes, and blobs
    the latest does not reference), for a dry run."""
    latest = (
        "SELECT DISTINCT ON (thread_id, checkpoint_ns) thread_id, checkpoint_ns, checkpoint_id, checkpoint "
        "FROM checkpoints WHERE thread_id = ANY(%(ids)s) ORDER BY thread_id, checkpoint_ns, checkpoint_id DESC"
    )
    if unkept_only:
        sql = (
            f"WITH latest AS ({latest}), "
            "ck AS (SELECT count(*) AS n, coalesce(sum(pg_column_size(c.*)), 0) AS b FROM checkpoints c "
            "  WHERE c.thread_id = ANY(%(ids)s) AND NOT EXISTS (SELECT 1 FROM latest l WHERE l.thread_id = c.thread_id "
            "  AND l.checkpoint_ns = c.checkpoint_ns AND l.checkpoint_id = c.checkpoint_id)), "
            "wr AS (SELECT count(*) AS n, coalesce(sum(pg_column_size(w.*)), 0) AS b FROM checkpoint_writes w "
            "  WHERE w.thread_id = ANY(%(ids)s) AND NOT EXISTS (SELECT 1 FROM latest l WHERE l.thread_id = w.thread_id "
            "  AND l.checkpoint_ns = w.checkpoint_ns AND l.checkpoint_id = w.checkpoint_id)), "
            "bl AS (SELECT count(*) AS n, coalesce(sum(pg_column_size(b.*)), 0) AS b FROM checkpoint_blobs b "
            "  WHERE b.thread_id = ANY(%(ids)s) AND NOT EXISTS (SELECT 1 FROM latest l WHERE l.thread_id = b.thread_id "
            "  AND l.checkpoint_ns = b.checkpoint_ns AND l.checkpoint -> 'channel_versions' ->> b.channel = b.version)) "
            "SELECT ck.n AS ck_n, ck.b AS ck_b, wr.n AS wr_n, wr.b AS wr_b, bl.n AS bl_n, bl.b AS bl_b FROM ck, wr, bl"
        )
    else:
        sql = (
            "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = ANY(%(ids)s)) AS ck_n, "
            "(SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM checkpoints c WHERE thread_id = ANY(%(ids)s)) AS ck_b, "
            "(SELECT count(*) FROM checkpoint_writes WHERE thread_id = ANY(%(ids)s)) AS wr_n, "
            "(SELECT coalesce(sum(pg_column_size(w.*)), 0) FROM checkpoint_writes w WHERE thread_id = ANY(%(ids)s)) AS wr_b, "
            "(SELECT count(*) FROM checkpoint_blobs WHERE thread_id = ANY(%(ids)s)) AS bl_n, "
            "(SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM checkpoint_blobs b WHERE thread_id = ANY(%(ids)s)) AS bl_b"
        )
    with pool.connection() as conn:
        r = conn.execute(sql, {"ids": thread_ids}, prepare=False).fetchone()
    return {"checkpoints": (r["ck_n"], int(r["ck_b"])), "checkpoint_writes": (r["wr_n"], int(r["wr_b"])),
            "checkpoint_blobs": (r["bl_n"], int(r["bl_b"]))}


def _add(report: PruneReport, usage: dict[str, tuple[int, int]], threads: int) -> None:
    report.threads += threads
    for table, (rows, size) in usage.items():
        report.rows[table] += rows
        report.bytes += size
