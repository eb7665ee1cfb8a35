"""The threads table: which graph a thread runs and where it stands (running, waiting at a
gate, finished, failed), so listing what waits for sign-off needs no checkpoint scan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

from contextlib import contextmanager

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.errors import Conflict, NotFound

#: First key of the two-key advisory locks that mark a thread as being run by a live process.
_RUN_LOCK_CLASS = 0x5349474E


@dataclass(frozen=True)
class ThreadRow:
    thread_id: str
    graph: str
    status: str
    gate: str | None
    summary: str
    deadline: datetime | None
    deadline_hours: float
    input: dict
    created_at: datetime
    updated_at: datetime
    #: the digest and content under review, stored while the thread waits at its gate (migration 005)
    digest: str | None = None
    review: str | None = None
    #: who started the thread: never an approver of its own request
    requested_by: str | None = None
    #: the graph's fingerprint at the start, what every run is given again, and why the thread
    #: cannot run here now
    graph_version: str | None = None
    run_options: dict | None = None
    graph_error: str | None = None

    @classmethod
    def from_db(cls, row: dict) -> "ThreadRow":
        """From a `SELECT *` row, ignoring columns a later migration added that this code
        does not know, so adding one never breaks reading a thread."""
        return cls(**{k: v for k, v in row.items() if k in _THREAD_FIELDS})


_THREAD_FIELDS = frozenset(ThreadRow.__dataclass_fields__)


class ThreadExists(Conflict):
    """The thread id is taken."""


def register(pool: ConnectionPool, thread_id: str, graph: str, summary: str, *, graph_input: dict, deadline_hours: float,
             requested_by: str | None = None, graph_version: str | None = None, run_options: dict | None = None) -> None:
    """Claim a new thread id, recording who requested it; ThreadExists if it is taken."""
    with pool.connection() as conn:
        row = conn.execute(
            "INSERT INTO threads (thread_id, graph, status, summary, input, deadline_hours, requested_by, graph_version, run_options) "
            "VALUES (%s, %s, 'running', %s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id",
            (thread_id, graph, summary[:200], Jsonb(graph_input), deadline_hours, requested_by, graph_version, Jsonb(run_options or {})),
        ).fetchone()
    if row is None:
        raise ThreadExists(f"thread {thread_id} already exists: pick another --thread id, or `signoff show {thread_id}`")


def get(pool: ConnectionPool, thread_id: str) -> ThreadRow | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM threads WHERE thread_id = %s", (thread_id,)).fetchone()
    return ThreadRow.from_db(row) if row else None


def get_existing(pool: ConnectionPool, thread_id: str) -> ThreadRow:
    """The thread's row, or NotFound with the one line that says where to look."""
    row = get(pool, thread_id)
    if row is None:
        raise NotFound(f"no thread {thread_id!r}: list threads with `signoff pending`")
    return row


def set_status(pool: ConnectionPool, thread_id: str, status: str, *, summary: str | None = None) -> None:
    """Mirror where the thread stands, other than waiting (`mark_waiting`): what is under
    review (gate, deadline, digest, content) is kept only while it waits at a gate, so it is
    cleared here and `pending` reads it from this row."""
    with pool.connection() as conn:
        conn.execute(
            "UPDATE threads SET status = %s, gate = NULL, summary = coalesce(%s, summary), "
            "deadline = NULL, digest = NULL, review = NULL, updated_at = now() WHERE thread_id = %s",
            (status, summary[:200] if summary else None, thread_id),
        )


def mark_waiting(
    pool: ConnectionPool,
    thread_id: str,
    *,
    gate: str,
    summary: str,
    digest: str,
    review: str,
    now: datetime,
    hours: float | None = None,
    clear_approval_wait: bool = False,
) -> datetime | None:
    """Mark the thread waiting at `gate` (what `pending` shows with it), in one statement; its
    deadline, or None if there is no such thread.

    The deadline stays as it was when the thread already waited at this gate (a run settled
    again after a crash, or an approval chain's next stage, which set its own); otherwise it
    is `now` + `hours`, or + the thread's own deadline_hours when `hours` is None.
    `clear_approval_wait`: the content under review has no approval chain (no amount), so a
    chain stored by an earlier gate visit goes (checkpoint.approval_chain.on_wait stores one).

    One statement where a run reaching its gate used three (read the row, clear the chain,
    write the row): a worker settles hundreds of threads, each round trip costing it CPU. The UPDATE's expressions see the row as it was, so the read is not needed."""
    with pool.connection() as conn:
        row = conn.execute(
            "WITH cleared AS (DELETE FROM approval_waits WHERE thread_id = %(t)s AND %(clear)s) "
            "UPDATE threads SET status = 'waiting', gate = %(gate)s, summary = coalesce(%(summary)s, summary), "
            "deadline = CASE WHEN status = 'waiting' AND gate = %(gate)s AND deadline IS NOT NULL THEN deadline "
            "  ELSE %(now)s + make_interval(secs => 3600 * coalesce(%(hours)s::float8, deadline_hours)) END, "
            "digest = %(digest)s, review = %(review)s, updated_at = now() WHERE thread_id = %(t)s RETURNING deadline",
            {"t": thread_id, "clear": clear_approval_wait, "gate": gate, "summary": summary[:200] if summary else None,
             "now": now, "hours": hours, "digest": digest, "review": review},
        ).fetchone()
    return row["deadline"] if row else None


def list_by_status(pool: ConnectionPool, *statuses: str) -> list[ThreadRow]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT * FROM threads WHERE status = ANY(%s) ORDER BY updated_at", (list(statuses),)
        ).fetchall()
    return [ThreadRow.from_db(r) for r in rows]


def list_decided_waiting(pool: ConnectionPool) -> list[ThreadRow]:
    """Threads still marked waiting although a decision was recorded since they began to wait:
    the deciding process died before the thread ran on (settle stamps updated_at when a
    thread starts waiting, so only a decision for the current gate visit is newer)."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT t.* FROM threads t WHERE t.status = 'waiting' AND EXISTS "
            "(SELECT 1 FROM approvals a WHERE a.thread_id = t.thread_id AND a.decided_at >= t.updated_at) "
            "ORDER BY t.updated_at"
        ).fetchall()
    return [ThreadRow.from_db(r) for r in rows]


@contextmanager
def locked(pool: ConnectionPool, thread_id: str) -> Iterator[psycopg.Connection]:
    """Hold the thread's row lock for the block, serialising sign-offs of one thread.

    NO KEY UPDATE, not UPDATE: inserting an approval checks its foreign key with a KEY SHARE
    lock on this row, which a plain FOR UPDATE held by our own other connection would block."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT 1 FROM threads WHERE thread_id = %s FOR NO KEY UPDATE", (thread_id,))
        yield conn


class ThreadBusy(Conflict):
    """Another live process is running this thread."""


class ClaimLost(psycopg.OperationalError):
    """The session that held a run's claim is gone (the database restarted): the lock went with
    it, so the run must stop rather than go on unclaimed beside a `recover`."""


class Claim:
    """A held claim on `conn`, the session a run writes its checkpoints through; `check()` proves it still holds."""

    def __init__(self, conn: psycopg.Connection, thread_id: str) -> None:
        self.conn, self.thread_id = conn, thread_id

    def check(self) -> None:
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ClaimLost(f"the session holding the run's claim ended: {reason}") from exc


@contextmanager
def claimed(pool: ConnectionPool, thread_id: str) -> Iterator[Claim]:
    """Hold the claim to run this thread for the block.

    A session advisory lock on a connection opened for the run (with the pool's settings, but
    not one of its connections: the run checks out pool connections while it holds the claim,
    and never waits for the pool while holding one of its connections). If the process dies,
    even by SIGKILL, PostgreSQL ends the session and frees the claim, so `recover` can tell a
    dead run (claim free) from one still running elsewhere (claim held) without heartbeats. A
    database restart ends the session too; the pool would quietly reconnect everything else,
    so the run writes its checkpoints through this very connection
    (ThreadRunner._writing_through): its next step's save fails and the run stops, with no
    check between steps.
    """
    conn = psycopg.connect(pool.conninfo, **pool.kwargs)
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", (_RUN_LOCK_CLASS, thread_id)).fetchone()["ok"]
        if not got:
            raise ThreadBusy(f"thread {thread_id} is running in another process: wait for it, or see `signoff show {thread_id}`")
        try:
            yield Claim(conn, thread_id)
        finally:
            try:  # let go now: a closed session's locks are freed only as its backend exits, a moment later
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_RUN_LOCK_CLASS, thread_id))
            except psycopg.Error:
                pass  # the session is gone (database restarted), and its lock with it
    finally:
        conn.close()


def is_claimed(pool: ConnectionPool, thread_id: str) -> bool:
    """True while a live process runs the thread (the claim is tried and, if free, let go at once)."""
    with pool.connection() as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", (_RUN_LOCK_CLASS, thread_id)).fetchone()["ok"]
        if got:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_RUN_LOCK_CLASS, thread_id))
    return not got
