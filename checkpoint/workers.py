"""Live workers: who they are, that they are alive, and what happens to the work of a dead one.

A worker holds ONE database session (its "lock session") for its whole life and takes the
run claim of every thread it runs there: the same two-key advisory lock an inline
`signoff start/approve/resume` takes on its own session (checkpoint/threads.py `claimed`),
so a worker and a terminal never run one thread at once, and `recover` sees a worker's
threads as claimed. One session for all claims keeps a worker at a handful of connections
however many threads it runs (PostgreSQL allows 100 by default).

A worker is dead when its lock session is gone (its process died: PostgreSQL ended the
session, and its claims with it, at once) or its heartbeat is older than `stale_after`
(its machine vanished: the session may linger until TCP gives up, so the reaper ends it
with pg_terminate_backend, which frees the claims). The reaper, run by every live worker
each second, requeues the dead worker's running jobs, counting a recovery on each; a job
that keeps killing its worker is dead-lettered after `max_recoveries` (after DBOS).
Liveness is judged with the database's clock only (now()), never a host's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any


import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.threads import _RUN_LOCK_CLASS, ClaimLost

#: Seconds between heartbeats, and after which a silent worker counts as gone.
HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 6.0
#: Deaths of workers a job may cause before it is set aside as failed.
MAX_RECOVERIES = 3


@dataclass(frozen=True)
class WorkerRow:
    id: int
    host: str
    pid: int
    concurrency: int
    running: int
    done: int
    draining: bool
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float


class LockSession:
    """The worker's claim session: one connection, shared by its run threads (psycopg
    serialises statements on a connection), holding one advisory lock per running thread."""

    def __init__(self, url: str) -> None:
        # TCP keepalives so a vanished peer is noticed by both ends within about half a minute.
        self.conn = psycopg.connect(
            url, autocommit=True, row_factory=dict_row, prepare_threshold=None,
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
        )
        row = self.conn.execute(
            "SELECT pg_backend_pid() AS pid, backend_start, (extract(epoch FROM backend_start) * 1000000)::bigint AS micros "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row is not None
        self.backend_pid: int = row["pid"]
        self.backend_start: datetime = row["backend_start"]
        #: application_name of the worker's pool sessions: migration 008's trigger refuses
        #: their writes once this session is gone, and `reap` ends them by it.
        self.fence_tag = fence_tag(row["pid"], row["micros"])
        self._held: set[str] = set()
        self._mutex = threading.Lock()

    def take(self, thread_ids: list[str]) -> set[str]:
        """Take the run claims of a claimed batch of jobs' threads, in one statement; the ones
        taken. A thread this worker already runs is not tried (session locks stack: taking it
        again would outlive its release), nor taken.

        One statement per batch where each run took its own: 100 runs starting at once
        queued on this one session for a round trip each, about 4% of a worker's CPU
        (profiled with py-spy). Released with `release` when the thread's job closes."""
        with self._mutex:
            wanted = [t for t in dict.fromkeys(thread_ids) if t not in self._held]
            if not wanted:
                return set()
            rows = self.conn.execute(
                "SELECT t, pg_try_advisory_lock(%s, hashtext(t)) AS ok FROM unnest(%s::text[]) AS t", (_RUN_LOCK_CLASS, wanted)
            ).fetchall()
            taken = {r["t"] for r in rows if r["ok"]}
            self._held |= taken
            return taken

    def release(self, thread_ids: list[str]) -> None:
        """Give back claims taken by `take` (those not held are ignored), in one statement."""
        with self._mutex:
            mine = [t for t in dict.fromkeys(thread_ids) if t in self._held]
            if not mine:
                return
            self._held.difference_update(mine)
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(t)) FROM unnest(%s::text[]) AS t", (_RUN_LOCK_CLASS, mine))
            except psycopg.Error:
                pass  # the session is gone, and its locks with it

    def alive(self) -> bool:
        try:
            self.conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        self.conn.close()


def fence_tag(lock_pid: int, lock_micros: int) -> str:
    """The application_name that ties a pool session to its worker's lock session."""
    return f"signoff-worker:{lock_pid}:{lock_micros}"


class SessionClaim:
    """A held claim. A run does not check it step by step: its writes go through sessions
    tagged with the lock session (migration 008), which PostgreSQL refuses once that session
    is gone, so a run that lost its claim cannot save its next step. `check()` remains for
    callers that want to know before doing something outside the database."""

    def __init__(self, session: LockSession, thread_id: str) -> None:
        self.session, self.thread_id = session, thread_id

    def check(self) -> None:
        try:
            self.session.conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ClaimLost(f"the worker's claim session ended: {reason}") from exc


def register(pool: ConnectionPool, *, host: str, pid: int, session: LockSession, concurrency: int) -> int:
    with pool.connection() as conn:
        row = conn.execute(
            "INSERT INTO workers (host, pid, lock_pid, lock_started, concurrency) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (host, pid, session.backend_pid, session.backend_start, concurrency),
        ).fetchone()
    return int(row["id"])  # type: ignore[index]


def heartbeat(pool: ConnectionPool, worker_id: int, *, running: int, done: int, draining: bool) -> bool:
    """Stamp the heartbeat; False if the row is gone (another worker reaped this one)."""
    with pool.connection() as conn:
        row = conn.execute(
            "UPDATE workers SET heartbeat_at = now(), running = %s, done = %s, draining = %s WHERE id = %s RETURNING id",
            (running, done, draining, worker_id),
        ).fetchone()
    return row is not None


def unregister(pool: ConnectionPool, worker_id: int) -> None:
    """A clean exit: jobs still marked running go back to wait (not a recovery), row removed."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs SET status = 'todo', worker_id = NULL WHERE worker_id = %s AND status = 'doing' "
            "AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.thread_id = jobs.thread_id AND o.status = 'todo')",
            (worker_id,),
        )
        conn.execute("UPDATE jobs SET status = 'done', result = 'superseded', finished_at = now() WHERE worker_id = %s AND status = 'doing'", (worker_id,))
        conn.execute("DELETE FROM workers WHERE id = %s", (worker_id,))
        conn.execute("SELECT pg_notify('signoff_jobs', '')")


_DEAD = (
    "SELECT w.id, w.lock_pid, (extract(epoch FROM w.lock_started) * 1000000)::bigint AS lock_micros, "
    "s.pid IS NOT NULL AS session_alive FROM workers w "
    "LEFT JOIN pg_stat_activity s ON s.pid = w.lock_pid AND s.backend_start = w.lock_started "
    "WHERE w.id <> %(me)s AND (s.pid IS NULL OR w.heartbeat_at < now() - make_interval(secs => %(stale)s)) "
    "FOR UPDATE OF w SKIP LOCKED"
)


def reap(pool: ConnectionPool, me: int, *, stale_after: float = STALE_AFTER_SECONDS, max_recoveries: int = MAX_RECOVERIES) -> list[dict[str, Any]]:
    """Remove dead workers and hand their running jobs back to the queue; the jobs moved
    (id, thread_id, status 'todo' or 'failed'). Two reapers never reap one worker twice
    (SKIP LOCKED on its row)."""
    moved: list[dict[str, Any]] = []
    with pool.connection() as conn, conn.transaction():
        dead = conn.execute(_DEAD, {"me": me, "stale": stale_after}).fetchall()
        for worker in dead:
            # Fencing, before its jobs are handed on (a frozen worker may wake at any moment):
            # end its lock session (its claims go, and migration 008's trigger refuses every
            # later write of its pool sessions), then every pool session it has, which ends
            # a write that passed that check before the lock session went. Both wait for the
            # sessions to exit (5 s at most), so when this commits, nothing of the dead worker
            # can still commit.
            if worker["session_alive"]:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (worker["lock_pid"],))
            conn.execute(
                "SELECT pg_terminate_backend(a.pid, 5000) FROM pg_stat_activity a WHERE a.application_name = %s "
                "AND a.pid <> pg_backend_pid()",
                (fence_tag(worker["lock_pid"], worker["lock_micros"]),),
            )
            moved += conn.execute(
                "UPDATE jobs SET status = CASE WHEN recoveries + 1 >= %(max)s THEN 'failed' ELSE 'todo' END, "
                "recoveries = recoveries + 1, worker_id = NULL, "
                "result = CASE WHEN recoveries + 1 >= %(max)s THEN 'dead-lettered: its worker died ' || (recoveries + 1) || ' times' "
                "  ELSE 'worker ' || %(w)s || ' died' END, "
                "finished_at = CASE WHEN recoveries + 1 >= %(max)s THEN now() END "
                "WHERE worker_id = %(w)s AND status = 'doing' RETURNING id, thread_id, status",
                {"w": worker["id"], "max": max_recoveries},
            ).fetchall()
            conn.execute("DELETE FROM workers WHERE id = %s", (worker["id"],))
        for job in moved:
            if job["status"] == "failed":
                conn.execute("UPDATE threads SET status = 'failed', updated_at = now() WHERE thread_id = %s", (job["thread_id"],))
                record_event_on(conn, job["thread_id"], "signoff (worker)", "run_dead_lettered", {"job": job["id"], "recoveries": max_recoveries})
        if moved:
            conn.execute("SELECT pg_notify('signoff_jobs', '')")
    return moved


def live(pool: ConnectionPool, *, stale_after: float = STALE_AFTER_SECONDS) -> list[WorkerRow]:
    """Workers whose lock session is open and whose heartbeat is fresh, oldest first."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT w.id, w.host, w.pid, w.concurrency, w.running, w.done, w.draining, w.started_at, w.heartbeat_at, "
            "extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age FROM workers w "
            "JOIN pg_stat_activity s ON s.pid = w.lock_pid AND s.backend_start = w.lock_started "
            "WHERE w.heartbeat_at >= now() - make_interval(secs => %s) ORDER BY w.started_at",
            (stale_after,),
        ).fetchall()
    return [WorkerRow(**r) for r in rows]


def any_accepting(pool: ConnectionPool) -> bool:
    """True if a live worker takes new work (not draining): then commands hand threads to it."""
    return any(not w.draining for w in live(pool))
