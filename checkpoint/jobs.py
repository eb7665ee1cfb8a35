"""The work queue: everything that can make a thread run, as a durable row in `jobs`.

Why a hand-written queue and not a library (procrastinate, pgqueuer, DBOS queues were
evaluated; procrastinate first, as DESIGN.md asks):

- procrastinate (3.x) brings its own schema and migration history beside ours, its own
  async connector and pool next to the psycopg pool every command already opens, and job
  functions registered on an App. Its per-key `lock` only excludes other procrastinate jobs:
  an inline `signoff start`/`resume` (no worker) is not a job, so the advisory-lock claim had
  to stay anyway. Its stalled jobs are only listed (requeueing is ours to write), a future
  job under a lock blocks that lock (our deadlines), and a database per test would need its
  schema applied apart from our migrations.
- pgqueuer is asyncio-only with its own tables and CLI; DBOS queues come with DBOS's whole
  workflow runtime, a second durable-execution model beside LangGraph's checkpoints.

What we need is small and fits in three statements on tables our migrations own: claim with
`FOR UPDATE SKIP LOCKED` while no job of the same thread is running (a partial unique index
on `thread_id WHERE status = 'doing'` backs it), finish, and requeue the jobs of dead workers
(checkpoint/workers.py). NOTIFY wakes idle workers; polling is the backstop.

A job means "make this thread progress as far as it can now"; the worker reads what to do
from the thread's checkpoint (run, apply a recorded decision, expire, resume), so there is at
most one waiting job per thread and enqueueing twice is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on

#: Channel a worker LISTENs on; the payload is unused (a wake-up, never the work itself).
JOBS_CHANNEL = "signoff_jobs"

JobKind = Literal["start", "decision", "deadline", "recover"]


@dataclass(frozen=True)
class Job:
    id: int
    thread_id: str
    kind: str
    graph: str
    recoveries: int
    #: the graph input of a thread no process has run yet (it was 'queued'), else None
    fresh_input: dict[str, Any] | None = None
    #: seconds from when it was due to its claim (the pickup latency a worker's metrics show)
    waited: float | None = None


def enqueue_on(conn: psycopg.Connection[Any], thread_id: str, kind: JobKind) -> int | None:
    """Queue a job for the thread on `conn` (in the caller's transaction, if any) and wake
    the workers at commit; None if one is already waiting for it."""
    row = conn.execute(
        "INSERT INTO jobs (thread_id, kind) VALUES (%s, %s) "
        "ON CONFLICT (thread_id) WHERE status = 'todo' DO NOTHING RETURNING id",
        (thread_id, kind),
    ).fetchone()
    conn.execute("SELECT pg_notify(%s, '')", (JOBS_CHANNEL,))
    return _first(row)


def enqueue(pool: ConnectionPool, thread_id: str, kind: JobKind) -> int | None:
    with pool.connection() as conn, conn.transaction():
        return enqueue_on(conn, thread_id, kind)


def submit(
    pool: ConnectionPool, thread_id: str, graph: str, summary: str, *, graph_input: dict[str, Any], deadline_hours: float, actor: str,
    graph_version: str | None = None, run_options: dict[str, Any] | None = None,
) -> int:
    """Register a new thread as 'queued' and its start job, in one transaction: a worker
    runs it. `actor` requested it. ThreadExists if the id is taken (nothing is written then)."""
    from checkpoint.threads import ThreadExists

    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO threads (thread_id, graph, status, summary, input, deadline_hours, requested_by, graph_version, run_options) "
            "VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id",
            (thread_id, graph, summary[:200], Jsonb(graph_input), deadline_hours, actor, graph_version, Jsonb(run_options or {})),
        ).fetchone()
        if row is None:
            raise ThreadExists(f"thread {thread_id} already exists: pick another --thread id, or `signoff show {thread_id}`")
        record_event_on(conn, thread_id, actor, "thread_started", {"graph": graph, "queued": True})
        job = enqueue_on(conn, thread_id, "start")
    assert job is not None  # a new thread has no job yet
    return job


def claim(pool: ConnectionPool, worker_id: int, limit: int) -> list[Job]:
    """Take up to `limit` due jobs for this worker, never one whose thread is running.

    One statement: the subquery locks candidate rows with SKIP LOCKED (two workers never
    take the same row), and the UPDATE marks them 'doing'. Should two claims still race to
    a thread (both saw no 'doing' job before either committed), the unique index refuses
    the second; that claim returns nothing and the next poll tries again."""
    if limit <= 0:
        return []
    try:
        with pool.connection() as conn:
            # A queued thread becomes 'running' in the same statement (one commit fewer per run).
            rows = conn.execute(
                "WITH taken AS (UPDATE jobs j SET status = 'doing', worker_id = %(w)s, started_at = now() "
                "  WHERE j.id IN (SELECT c.id FROM jobs c WHERE c.status = 'todo' AND c.run_after <= now() "
                "    AND NOT EXISTS (SELECT 1 FROM jobs d WHERE d.thread_id = c.thread_id AND d.status = 'doing') "
                "    ORDER BY c.run_after, c.id LIMIT %(n)s FOR UPDATE OF c SKIP LOCKED) "
                "  RETURNING j.id, j.thread_id, j.kind, j.recoveries, extract(epoch FROM now() - greatest(j.created_at, j.run_after))::float8 AS waited), "
                "started AS (UPDATE threads t SET status = 'running', updated_at = now() FROM taken "
                "  WHERE t.thread_id = taken.thread_id AND t.status = 'queued' RETURNING t.thread_id) "
                "SELECT taken.*, t.graph, t.input, (t.status = 'queued') AS fresh FROM taken JOIN threads t USING (thread_id)",
                {"w": worker_id, "n": limit},
            ).fetchall()
    except psycopg.errors.UniqueViolation:
        return []
    return [Job(r["id"], r["thread_id"], r["kind"], r["graph"], r["recoveries"], r["input"] if r["fresh"] else None, r["waited"])
            for r in sorted(rows, key=lambda r: r["id"])]


def finish(pool: ConnectionPool, job_id: int, result: str, *, failed: bool = False, worker_id: int | None = None) -> None:
    """Close a running job. With `worker_id`, only while that worker still holds it: a worker
    that was taken over (its job handed back to the queue, perhaps running again elsewhere
    under the same id) closes nothing."""
    finish_all(pool, [(job_id, result)], failed=failed, worker_id=worker_id)


def finish_all(pool: ConnectionPool, done: list[tuple[int, str]], *, failed: bool = False, worker_id: int | None = None) -> None:
    """`finish` for many jobs (job id, result) in one statement: a worker closes the jobs of
    the runs that ended since its last batch of progress events together (EventWriter)."""
    if not done:
        return
    with pool.connection() as conn:
        conn.execute(
            "UPDATE jobs SET status = %s, result = d.result, finished_at = now() "
            "FROM unnest(%s::bigint[], %s::text[]) AS d(id, result) WHERE jobs.id = d.id AND jobs.status = 'doing' "
            "AND (%s::bigint IS NULL OR jobs.worker_id = %s::bigint)",
            ("failed" if failed else "done", [j for j, _ in done], [r[:500] for _, r in done], worker_id, worker_id),
        )


def release(pool: ConnectionPool, job_id: int, result: str, *, delay_seconds: float = 0.0, worker_id: int | None = None) -> None:
    """Put a job back to wait (drained, or the database blinked): another worker, or this
    one after `delay_seconds`, takes it. If a newer job already waits for the thread, that
    one will do the work and this one is closed instead. With `worker_id`, only while that
    worker still holds the job (see `finish`)."""
    mine = "AND (%s::bigint IS NULL OR worker_id = %s::bigint)"
    with pool.connection() as conn, conn.transaction():
        moved = conn.execute(
            "UPDATE jobs SET status = 'todo', worker_id = NULL, result = %s, "
            f"run_after = now() + make_interval(secs => %s) WHERE id = %s AND status = 'doing' {mine} "
            "AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.thread_id = jobs.thread_id AND o.status = 'todo') RETURNING id",
            (result[:500], delay_seconds, job_id, worker_id, worker_id),
        ).fetchone()
        if moved is None:
            conn.execute(f"UPDATE jobs SET status = 'done', result = %s, finished_at = now() WHERE id = %s AND status = 'doing' {mine}",
                         (result[:500], job_id, worker_id, worker_id))
        conn.execute("SELECT pg_notify(%s, '')", (JOBS_CHANNEL,))


def active_job(pool: ConnectionPool, thread_id: str) -> dict[str, Any] | None:
    """The thread's job waiting or running, if any (id, kind, status, worker_id)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT id, kind, status, worker_id FROM jobs WHERE thread_id = %s AND status IN ('todo', 'doing') ORDER BY id DESC LIMIT 1",
            (thread_id,),
        ).fetchone()


def counts(pool: ConnectionPool) -> dict[str, int]:
    with pool.connection() as conn:
        return {r["status"]: r["n"] for r in conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status")}


def enqueue_due_deadlines(pool: ConnectionPool, now: datetime) -> int:
    """A 'deadline' job for every thread waiting at a gate past its deadline, read with the
    caller's clock (the one that set the deadline, injectable in tests). Deadline jobs exist
    only once due, so none ever sits in the queue blocking its thread."""
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "INSERT INTO jobs (thread_id, kind) SELECT t.thread_id, 'deadline' FROM threads t "
            "WHERE t.status = 'waiting' AND t.deadline <= %s "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.thread_id = t.thread_id AND j.status IN ('todo', 'doing')) "
            "ON CONFLICT (thread_id) WHERE status = 'todo' DO NOTHING RETURNING id",
            (now,),
        ).fetchall()
        if rows:
            conn.execute("SELECT pg_notify(%s, '')", (JOBS_CHANNEL,))
    return len(rows)


def enqueue_abandoned(pool: ConnectionPool, run_lock_class: int, *, grace_seconds: float = 2.0) -> int:
    """A 'recover' job for every thread a dead process left mid-run (status running, or
    waiting with a decision recorded since it began to wait) that no live process claims and
    no job covers. Not 'interrupted': a person stopped that run on purpose (`signoff resume`
    goes on with it); a drained worker's runs go back to the queue with their own jobs. Claims are read from pg_locks in the same statement,
    never by trying the lock (a try would briefly take it from under a run starting now).
    `grace_seconds` leaves alone a thread an inline command registered (or decided) an
    instant ago and is about to claim."""
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "INSERT INTO jobs (thread_id, kind) SELECT t.thread_id, 'recover' FROM threads t "
            "WHERE ((t.status = 'running' AND t.updated_at < now() - make_interval(secs => %(grace)s)) "
            "   OR (t.status = 'waiting' AND EXISTS (SELECT 1 FROM approvals a WHERE a.thread_id = t.thread_id "
            "       AND a.decided_at >= t.updated_at AND a.decided_at < now() - make_interval(secs => %(grace)s)))) "
            "AND t.graph_error IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.thread_id = t.thread_id AND j.status IN ('todo', 'doing')) "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.database = "
            "   (SELECT oid FROM pg_database WHERE datname = current_database()) AND l.classid = %(lock_class)s "
            "   AND l.objid = (hashtext(t.thread_id)::bigint & 4294967295) AND l.objsubid = 2 AND l.granted) "
            "ON CONFLICT (thread_id) WHERE status = 'todo' DO NOTHING RETURNING id",
            {"lock_class": run_lock_class, "grace": grace_seconds},
        ).fetchall()
        if rows:
            conn.execute("SELECT pg_notify(%s, '')", (JOBS_CHANNEL,))
    return len(rows)


def is_claimed(pool: ConnectionPool, thread_id: str, run_lock_class: int) -> bool:
    """True while a live process (a terminal or a worker) holds the thread's run claim, read
    from pg_locks: unlike trying the lock, looking never takes it from under a run starting."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.classid = %s "
            "AND l.objid = (hashtext(%s)::bigint & 4294967295) AND l.objsubid = 2 AND l.granted) AS held",
            (run_lock_class, thread_id),
        ).fetchone()
    return bool(row["held"])  # type: ignore[index]


def _first(row: dict[str, Any] | None) -> int | None:
    return int(row["id"]) if row else None
