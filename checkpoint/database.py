"""One connection pool per command, configured as PostgresSaver needs it, plus the saver."""

from __future__ import annotations

import functools
import logging
import select
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from checkpoint.embedded import embedded_url
from checkpoint.errors import Unavailable
from checkpoint.settings import Settings, redact_url, scrub_secrets

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres import PostgresSaver


@functools.cache
def _quiet_psycopg_logs() -> None:
    """Keep psycopg's housekeeping off the terminal, once per process, when a pool first opens
    (not at import: importing a module changes nothing).

    The pool logs each stale connection it discards as a warning; replacing them is its job,
    not news for the person at the terminal (with no logging configured it would reach
    stderr). Likewise psycopg's "error ignored terminating <Pipeline>" when the server goes
    away mid-save (an inline run saves through its claim session, in pipeline mode): the
    save's own error already says so, in one line."""
    logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
    logging.getLogger("psycopg").addHandler(logging.NullHandler())


class DatabaseUnavailable(Unavailable):
    """The database could not be reached; the message says what to do."""


def resolve_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server under SIGNOFF_HOME (started if needed)."""
    return settings.database_url or embedded_url(settings.home)


#: A connection idle longer than this is health-checked (one round trip) when checked out.
IDLE_CHECK_SECONDS = 2.0


def _returned(conn: psycopg.Connection) -> None:
    """Pool `configure` callback, and SignoffPool.putconn: when the connection was last handed back."""
    conn._signoff_idle_since = time.monotonic()  # type: ignore[attr-defined]


class SignoffPool(ConnectionPool):
    """A pool that notes when each connection is handed back, in the thread handing it back.

    psycopg_pool runs a `reset` callback on one of its worker threads, so every connection
    returned through one crossed threads twice (a queue put, a worker woken under the GIL):
    about a tenth of a busy server's CPU, measured under 50 concurrent API clients. Without
    one, the pool puts the connection back at once (rolling back a transaction left open, as
    before)."""

    def putconn(self, conn: psycopg.Connection) -> None:
        _returned(conn)
        super().putconn(conn)


def _check_when_needed(conn: psycopg.Connection) -> None:
    """Pool `check` callback: a round trip only for a connection that sat idle, or whose socket
    has something to read (a server that restarted or ended the session has said so).

    psycopg_pool's stock `check_connection` costs a round trip on every checkout, and a
    durable step checks out several times (that made a Signoff step slower than
    stock PostgresSaver's). A connection handed back moments ago with nothing waiting on its
    socket is as good as it was then; one that went bad anyway fails its statement, which the
    commands already report as a lost database (exit 5, resumable)."""
    idle = time.monotonic() - getattr(conn, "_signoff_idle_since", float("-inf"))
    if idle > IDLE_CHECK_SECONDS or _input_waiting(conn):
        ConnectionPool.check_connection(conn)


def _input_waiting(conn: psycopg.Connection) -> bool:
    """True if the server sent something to an idle connection (a termination notice, a
    notification), or if that cannot be told; never blocks."""
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError, psycopg.Error):
        return True


def ensure_reachable(url: str) -> None:
    """Connect once and hang up; DatabaseUnavailable saying why (secrets scrubbed) if that fails."""
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        reason = scrub_secrets(reason, url)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {redact_url(url)} ({reason}): check DATABASE_URL "
            "(or unset it to use the embedded server)"
        ) from None


def open_pool(url: str, *, max_size: int = 8, connect_timeout: float = 10.0, application_name: str | None = None) -> ConnectionPool:
    """A pool whose connections suit PostgresSaver (autocommit, dict rows, and
    `prepare_threshold=0`: every statement prepared on the server at its first execution, as
    LangGraph's docs configure it) and are health-checked on checkout when they sat idle or heard from
    the server (`_check_when_needed`), so a connection that went stale (server restarted,
    idle timeout) is replaced by the pool instead of surfacing as an error.

    `application_name`: a worker's fence tag (checkpoint/workers.py `fence_tag`), which makes
    every session of the pool, reconnected ones included, subject to migration 008's fence."""
    _quiet_psycopg_logs()
    # One direct connection first: it fails in seconds with the real reason, where the pool
    # would retry quietly until its timeout.
    ensure_reachable(url)
    pool = SignoffPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, "connect_timeout": 5,
                **({"application_name": application_name} if application_name else {})},
        check=_check_when_needed,
        configure=_returned,
        open=False,
        name="signoff",
    )
    pool.open(wait=False)
    try:
        pool.wait(timeout=connect_timeout)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {redact_url(url)}: check DATABASE_URL "
            "(or unset it to use the embedded server)"
        ) from exc
    return pool


@contextmanager
def connect(settings: Settings, *, migrate: bool = True, checkpoints: bool = True) -> Iterator[ConnectionPool]:
    """Open the pool for this command, migrating first unless told not to; `checkpoints=False`
    for a command that never reads checkpoints (see checkpoint.migrations._pending)."""
    from checkpoint.migrations import migrate as apply_migrations

    pool = open_pool(resolve_url(settings))
    try:
        if migrate:
            apply_migrations(pool, checkpoints=checkpoints)
        yield pool
    finally:
        pool.close()


class HeldConnection:
    """A pool-shaped view of one connection the caller already holds (a thread's row lock and
    its transaction): every function that takes a pool runs its statements on it, inside that
    transaction, instead of checking out a second connection while holding the first.

    Why: a caller that holds a pooled connection and waits for another from the same pool
    deadlocks the pool once as many callers hold one as it has connections (each waits for a
    second that only another's release would free, until PoolTimeout). On the held connection,
    a `with pool.connection() as conn, conn.transaction():` becomes a savepoint, and what it
    writes commits with the caller's transaction."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        yield self.conn


def make_saver(pool: ConnectionPool) -> "PostgresSaver":
    """LangGraph's PostgresSaver on the shared pool (its tables come from `migrate`), without
    its instance lock while it works on the pool (`_pooled_saver_class`)."""
    return _pooled_saver_class()(pool)  # type: ignore[arg-type]


@functools.cache
def _pooled_saver_class() -> type:
    """PostgresSaver that takes its instance lock only when it works on one connection.

    PostgresSaver holds one threading.Lock around every read and write (`_cursor`), which a
    single connection needs, but which on a pool serialises every run sharing the saver
    (a worker's 100 runs): each cursor gets its own pooled connection anyway. With
    the lock gone on a pool, one compiled graph serves all of a worker's runs, instead of a
    graph compiled per run thread. On a single connection (an inline run writing through
    its claim session, ThreadRunner._writing_through) the library's own path, lock included."""
    from langgraph.checkpoint.postgres import PostgresSaver

    class PooledPostgresSaver(PostgresSaver):
        @contextmanager
        def _cursor(self, *, pipeline: bool = False) -> Iterator[psycopg.Cursor]:  # type: ignore[override]
            pool = self.conn
            if not isinstance(pool, ConnectionPool) or self.pipe is not None or not self.supports_pipeline:
                with super()._cursor(pipeline=pipeline) as cur:
                    yield cur
                return
            with pool.connection() as conn:
                if pipeline:  # as the library does: one pipeline, one implicit transaction
                    with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur
                else:
                    with conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur

    return PooledPostgresSaver


CONNECTION_HEADROOM_SQL = """
SELECT current_setting('max_connections')::int
       - current_setting('superuser_reserved_connections')::int
       - coalesce(current_setting('reserved_connections', true), '0')::int AS usable,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS in_use
"""


def connection_headroom(pool: ConnectionPool) -> tuple[int, int]:
    """(connections PostgreSQL lets ordinary roles open, client connections open now): what a
    worker about to open its pool compares its own need with."""
    with pool.connection() as conn:
        row = conn.execute(CONNECTION_HEADROOM_SQL).fetchone()
    return int(row["usable"]), int(row["in_use"])


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the database went away (restart, network), not bad SQL."""
    return isinstance(exc, (psycopg.OperationalError, PoolTimeout, DatabaseUnavailable))
