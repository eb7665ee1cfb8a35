"""Schema migrations: LangGraph's checkpoint tables, then ours from migrations/NNN_name.sql.

Like PostgresSaver's own list, the files are append-only and their number is the version.
Everything runs under one advisory lock, so two processes migrating at once serialise
instead of racing (PostgresSaver.setup() on its own is not safe to run concurrently).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from psycopg_pool import ConnectionPool

from checkpoint.database import make_saver

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


def migrate(pool: ConnectionPool) -> list[Migration]:
    """Apply what is pending; returns the migrations applied by this call."""
    applied_now: list[Migration] = []
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            make_saver(pool).setup()
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
