"""One connection pool per command, configured as PostgresSaver needs it, plus the saver."""

from __future__ import annotations

import logging
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


# The pool logs each stale connection it discards as a warning; replacing them is its job, not
# news for the person at the terminal (with no logging configured it would reach stderr).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


class DatabaseUnavailable(Unavailable):
    """The database could not be reached; the message says what to do."""


def resolve_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server under SIGNOFF_HOME (started if needed)."""
    return settings.database_url or embedded_url(settings.home)


def open_pool(url: str, *, max_size: int = 8, connect_timeout: float = 10.0) -> ConnectionPool:
    """A pool whose connections suit PostgresSaver (autocommit, dict rows, no server-side
    prepared statements) and are health-checked on checkout, so a connection that went stale
    (server restarted, idle timeout) is replaced by the pool instead of surfacing as an error."""
    try:
        # One direct connection first: it fails in seconds with the real reason, where the
        # pool would retry quietly until its timeout.
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        reason = scrub_secrets(reason, url)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {redact_url(url)} ({reason}): check DATABASE_URL "
            "(or unset it to use the embedded server)"
        ) from None
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, "connect_timeout": 5},
        check=ConnectionPool.check_connection,
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
def connect(settings: Settings, *, migrate: bool = True) -> Iterator[ConnectionPool]:
    """Open the pool for this command, migrating first unless told not to."""
    from checkpoint.migrations import migrate as apply_migrations

    pool = open_pool(resolve_url(settings))
    try:
        if migrate:
            apply_migrations(pool)
        yield pool
    finally:
        pool.close()


def make_saver(pool: ConnectionPool) -> "PostgresSaver":
    """LangGraph's PostgresSaver on the shared pool (its tables come from `migrate`)."""
    from langgraph.checkpoint.postgres import PostgresSaver

    return PostgresSaver(pool)  # type: ignore[arg-type]


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the database went away (restart, network), not bad SQL."""
    return isinstance(exc, (psycopg.OperationalError, PoolTimeout, DatabaseUnavailable))
