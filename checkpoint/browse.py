"""Every thread, listed the way an operator looks for one: by status (waiting, running,
finished, failed, or expired at a gate), graph and age, searched by thread id or by a word
of its summary, a page at a time.

One query on the threads table, as `pending` is (checkpoint/listing.py): pages are keyset
pages on (updated_at, thread_id), so the 100th page costs what the first does, and text is
matched with PostgreSQL full-text search through a GIN index (migration 015).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput
from checkpoint.threads import ThreadRow

#: What a list can show; "expired" is a thread whose gate deadline ran out (any status now).
LISTS = ("waiting", "running", "finished", "failed", "expired", "all")
#: The "running" list is every thread on its way: queued for a worker, running, or interrupted
#: at a step boundary (`signoff resume` continues it).
STATUSES_OF = {"running": ("queued", "running", "interrupted")}
PAGE_SIZE = 50
#: A search is a few words, not a document.
MAX_QUERY = 200


@dataclass(frozen=True)
class Filters:
    status: str = "waiting"
    graph: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    text: str | None = None


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[ThreadRow]
    #: the key of the page after this one, or None on the last page
    next_key: str | None


def valid_filters(status: str, graph: str | None, older: str | None, newer: str | None, text: str | None) -> Filters:
    """Filters from what a person typed; InvalidInput (one line) for anything else."""
    from checkpoint.listing import parse_duration

    if status not in LISTS:
        raise InvalidInput(f"status must be one of {', '.join(LISTS)}")
    if graph is not None and (not graph.isascii() or not graph.replace("_", "").replace("-", "").isalnum() or len(graph) > 40):
        raise InvalidInput("graph must be a graph name: support, revision or research")
    text = (text or "").strip()
    if len(text) > MAX_QUERY or "\x00" in text:
        raise InvalidInput(f"search for at most {MAX_QUERY} characters (a thread id or a few words)")
    return Filters(status=status, graph=graph or None, text=text or None,
                   older_than=parse_duration(older, "older than") if older else None,
                   newer_than=parse_duration(newer, "newer than") if newer else None)


def encode_key(row: ThreadRow) -> str:
    return base64.urlsafe_b64encode(f"{row.updated_at.isoformat()}|{row.thread_id}".encode()).decode().rstrip("=")


def decode_key(key: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        stamp, thread_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), thread_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("that page link is damaged: go back to the first page") from None


def oldest_first(status: str) -> bool:
    """Waiting threads oldest wait first (as `pending`: the longest wait is the most urgent);
    every other list newest first (what just happened)."""
    return status == "waiting"


def where_clause(filters: Filters) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if filters.status == "expired":
        # the few expired ids first (a partial index), then their rows by key: no scan of all threads
        where.append("thread_id = ANY(ARRAY(SELECT thread_id FROM approvals WHERE decision = 'expired'))")
    elif filters.status in STATUSES_OF:
        where.append("status = ANY(%s)")
        params.append(list(STATUSES_OF[filters.status]))
    elif filters.status != "all":
        where.append("status = %s")  # a constant the partial index on waiting threads (migration 005) is chosen for
        params.append(filters.status)
    if filters.graph:
        where.append("graph = %s")
        params.append(filters.graph)
    if filters.older_than is not None:
        where.append("updated_at <= now() - %s")
        params.append(filters.older_than)
    if filters.newer_than is not None:
        where.append("updated_at > now() - %s")
        params.append(filters.newer_than)
    if filters.text:
        # The id as typed, or every word of the text in the summary (stemmed: "charged"
        # finds "charge"), through the GIN index on the summary's stored words.
        where.append("(thread_id = %s OR summary_words @@ plainto_tsquery('english', %s))")
        params += [filters.text, filters.text]
    return (" AND ".join(where) or "true"), params


#: What a list shows (not the stored words, nor the graph input).
_COLUMNS = "thread_id, graph, status, gate, summary, deadline, deadline_hours, '{}'::jsonb AS input, created_at, updated_at, digest, NULL AS review"


def threads_page(pool: ConnectionPool, filters: Filters, *, after: str | None = None, limit: int = PAGE_SIZE) -> Page:
    """One page of threads matching `filters`, after the page key `after` (None: the first)."""
    clause, params = where_clause(filters)
    ascending = oldest_first(filters.status)
    order = "updated_at, thread_id" if ascending else "updated_at DESC, thread_id DESC"
    page_clause, page_params = clause, list(params)
    if after:
        stamp, thread_id = decode_key(after)
        page_clause += f" AND (updated_at, thread_id) {'>' if ascending else '<'} (%s, %s)"
        page_params += [stamp, thread_id]
    with pool.connection() as conn:
        total = conn.execute(f"SELECT count(*) AS n FROM threads WHERE {clause}", params).fetchone()["n"]
        rows = conn.execute(f"SELECT {_COLUMNS} FROM threads WHERE {page_clause} ORDER BY {order} LIMIT %s",
                            [*page_params, limit + 1]).fetchall()
    found = [ThreadRow.from_db(r) for r in rows[:limit]]
    return Page(total=total, rows=found, next_key=encode_key(found[-1]) if len(rows) > limit else None)
