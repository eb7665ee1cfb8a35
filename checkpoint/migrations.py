"""Schema migrations: LangGraph's checkpoint tables, then ours from migrations/NNN_name.sql.

Like PostgresSaver's own list, the files are append-only and their number is the version.
Everything runs under one advisory lock, on the connection that holds it, so two processes
migrating at once serialise instead of racing (PostgresSaver.setup() on its own is not safe to
run concurrently); an up-to-date database is recognised without taking the lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
from psycopg_pool import ConnectionPool

from checkpoint.database import DatabaseUnavailable

# Any fixed 64-bit key works; this one is "signoff" in ASCII.
_MIGRATION_LOCK_KEY = 0x7369676E6F6666
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def available() -> list[Migration]:
    """The shipped migrations in version order; a gap or duplicate number is a packaging bug."""
    found = []
    for entry in resources.files("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return found


def _pending(conn: psycopg.Connection, checkpoints: bool = True) -> bool:
    """True unless LangGraph's and Signoff's migrations are all applied (a cheap read, no lock).

    With `checkpoints=False` LangGraph's own list is not consulted (importing it costs a
    command that never reads checkpoints a third of a second): ours are applied after
    LangGraph's in the same call, so ours being complete means LangGraph's were too, as of
    the version that applied them; a command that uses the checkpointer checks in full."""
    tables = conn.execute(
        "SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS lg, to_regclass('signoff_migrations') IS NOT NULL AS so"
    ).fetchone()
    if not (tables["lg"] and tables["so"]):
        return True
    ours = {r["version"] for r in conn.execute("SELECT version FROM signoff_migrations")}
    if any(m.version not in ours for m in available()):
        return True
    if not checkpoints:
        return False
    from langgraph.checkpoint.postgres import PostgresSaver

    langgraph = conn.execute("SELECT coalesce(max(v), -1) AS v FROM checkpoint_migrations").fetchone()["v"]
    return langgraph < len(PostgresSaver.MIGRATIONS) - 1


def _take_lock(conn: psycopg.Connection, timeout: float) -> None:
    """The migration lock, by polling pg_try_advisory_lock rather than waiting in
    pg_advisory_lock: a session blocked inside a statement holds a snapshot, and
    PostgresSaver's CREATE INDEX CONCURRENTLY waits for every snapshot, so a waiter would
    deadlock with the holder's own migration (two first commands at once)."""
    deadline = time.monotonic() + timeout
    while not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_MIGRATION_LOCK_KEY,)).fetchone()["ok"]:
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                f"another process has been migrating the database for over {timeout:.0f}s: "
                "wait for it and retry (see pg_stat_activity)"
            )
        time.sleep(0.05)


def migrate(pool: ConnectionPool, *, lock_timeout: float = 300.0, checkpoints: bool = True) -> list[Migration]:
    """Apply what is pending; returns the migrations applied by this call.

    Everything runs on ONE connection (the one holding the lock): no step of it ever waits
    for another connection of this process, so no lock wait can close a cycle through the
    client, where PostgreSQL's deadlock detector cannot see it. `checkpoints=False`: see
    `_pending` (for commands that never read checkpoints)."""
    applied_now: list[Migration] = []
    with pool.connection() as conn:
        if not _pending(conn, checkpoints):
            return applied_now
        from langgraph.checkpoint.postgres import PostgresSaver

        _take_lock(conn, lock_timeout)
        try:
            PostgresSaver(conn).setup()  # type: ignore[arg-type]
            conn.execute(
                "CREATE TABLE IF NOT EXISTS signoff_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in conn.execute("SELECT version FROM signoff_migrations")}
            for migration in available():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql, prepare=False)  # type: ignore[arg-type]  # many statements
                    conn.execute(
                        "INSERT INTO signoff_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied_now


def status(pool: ConnectionPool) -> list[MigrationStatus]:
    """Every shipped migration with when it was applied (None = pending)."""
    with pool.connection() as conn:
        exists = conn.execute("SELECT to_regclass('signoff_migrations') AS t").fetchone()
        rows = conn.execute("SELECT version, applied_at FROM signoff_migrations").fetchall() if exists and exists["t"] else []
    applied = {r["version"]: r["applied_at"] for r in rows}
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in available()]
