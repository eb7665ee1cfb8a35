"""LangGraph's PostgresStore in Signoff's own database, for graphs whose nodes take `store`:
its tables are set up once, under the migration lock, like the checkpoint tables."""

from __future__ import annotations

import threading
from typing import Any

_ready: set[str] = set()
_mutex = threading.Lock()


def store_for(pool: Any) -> Any:
    """A PostgresStore on the pool, its tables created if this database has none yet."""
    from langgraph.store.postgres import PostgresStore

    key = str(getattr(pool, "conninfo", id(pool)))
    with _mutex:
        if key not in _ready:
            _setup(pool)
            _ready.add(key)
    return PostgresStore(pool)


def _setup(pool: Any) -> None:
    from langgraph.store.postgres import PostgresStore

    from checkpoint.migrations import _MIGRATION_LOCK_KEY, _take_lock

    with pool.connection() as conn:
        row = conn.execute("SELECT to_regclass('store_migrations') IS NOT NULL AS ok").fetchone()
        if row["ok"]:
            applied = conn.execute("SELECT coalesce(max(v), -1) AS v FROM store_migrations").fetchone()["v"]
            if applied >= len(PostgresStore.MIGRATIONS) - 1:
                return
        _take_lock(conn, 300.0)
        try:
            PostgresStore(conn).setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
