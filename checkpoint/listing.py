"""What waits for sign-off, as one indexed query on the threads table, fast at any number of threads.

The run that stops a thread at its gate stores what a listing shows (gate, summary, deadline,
the digest and content under review: runtime/thread_runner.py ThreadRunner.settle), so listing
10,000 waiting threads reads one page of rows through the partial index
`threads_waiting_idx` (migration 005) and never loads a checkpoint or imports a graph.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput
from checkpoint.threads import ThreadRow

#: `pending --limit` default and bound: a page a person reads; scripts page with --older-than/--limit.
DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
#: The longest duration any option takes (ten years, as gate deadlines).
MAX_DURATION = timedelta(days=3660)

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> timedelta:
    """`30m`, `2h`, `3d`, `1w` (a number and a unit) as a timedelta; InvalidInput otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"].lower()] if match else math.nan
    if not match or not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION.total_seconds():
        raise InvalidInput(f"{option} must be a duration like 30m, 2h, 3d or 1w (at most 3660d), not {text!r}")
    return timedelta(seconds=seconds)


def valid_limit(limit: int, option: str = "--limit") -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"{option} must be a whole number from 1 to {MAX_LIMIT}, not {limit}")
    return limit


@dataclass(frozen=True)
class Page:
    """One page of waiting threads, oldest first, and how many match in all."""

    total: int
    rows: list[ThreadRow]


def waiting(pool: ConnectionPool, *, limit: int = DEFAULT_LIMIT, graph: str | None = None,
            older_than: timedelta | None = None) -> Page:
    """Threads waiting at a gate, oldest wait first (ties by id, so pages are stable).

    `older_than` compares with the database's clock, the one that stamped `updated_at`."""
    where = ["status = 'waiting'"]
    params: list[object] = []
    if graph is not None:
        where.append("graph = %s")
        params.append(graph)
    if older_than is not None:
        where.append("updated_at <= now() - %s")
        params.append(older_than)
    clause = " AND ".join(where)
    with pool.connection() as conn:
        # Two statements, no transaction: a thread that starts or stops waiting in between
        # makes the count one off, which a listing of a moving queue is anyway.
        total = conn.execute(f"SELECT count(*) AS n FROM threads WHERE {clause}", params).fetchone()["n"]
        rows = conn.execute(
            f"SELECT * FROM threads WHERE {clause} ORDER BY updated_at, thread_id LIMIT %s", [*params, limit]
        ).fetchall()
    return Page(total=total, rows=[ThreadRow.from_db(r) for r in rows])


def graph_seen(pool: ConnectionPool, graph: str) -> bool:
    """Whether any thread in the database runs this graph (then `--graph` names a real one
    without importing the graph registry)."""
    with pool.connection() as conn:
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM threads WHERE graph = %s) AS seen", (graph,)).fetchone()["seen"])
