"""The side effects agents may cause: tickets, outbound replies, kb search (each audited
through checkpoint/audit.py).

Each external write is keyed by thread, so a node that runs again (after a crash, retry or
resume) finds the row it wrote before instead of writing a second one.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph.config import get_config
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event, record_event_on  # noqa: F401 - the audit trail's home is checkpoint/


def current_thread_id() -> str:
    """The thread of the node now running (LangGraph's config carries it)."""
    return str(get_config()["configurable"]["thread_id"])


@dataclass(frozen=True)
class Article:
    slug: str
    title: str
    category: str
    body: str
    rank: float


#: kb_search's statement (parameters q, cat, limit); tests/benchmarks/floor_bench.py runs it too.
KB_SEARCH_SQL = (
    "WITH q AS (SELECT replace(plainto_tsquery('english', %(q)s)::text, '&', '|')::tsquery AS q) "
    "SELECT slug, title, category, body, ts_rank(tsv, q.q) AS rank FROM kb_articles, q "
    "WHERE tsv @@ q.q AND (%(cat)s::text IS NULL OR category = %(cat)s) "
    "ORDER BY rank DESC, slug LIMIT %(limit)s"
)


def kb_search(pool: ConnectionPool, query: str, *, category: str | None = None, limit: int = 3) -> list[Article]:
    """Best-matching knowledge-base articles; OR-ed terms so a long question still matches."""
    with pool.connection() as conn:
        rows = conn.execute(KB_SEARCH_SQL, {"q": query, "cat": category, "limit": limit}).fetchall()
    return [Article(r["slug"], r["title"], r["category"], r["body"], float(r["rank"])) for r in rows]


def open_ticket(pool: ConnectionPool, thread_id: str, *, intent: str, summary: str, handover: str | None = None) -> int:
    """The thread's ticket id, creating the ticket only the first time.

    The ticket and its audit event are one transaction: a process killed in between leaves
    neither, never a ticket the audit does not mention. `handover`: the hand-over topic that
    sent it (nodes/handover.py), so the audit says why a person got it."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO tickets (thread_id, intent, summary) VALUES (%s, %s, %s) "
            "ON CONFLICT (thread_id) DO NOTHING RETURNING id",
            (thread_id, intent, summary[:500]),
        ).fetchone()
        if row is not None:
            detail = {"ticket_id": row["id"], "intent": intent} | ({"handover": handover} if handover else {})
            record_event_on(conn, thread_id, "signoff", "ticket_opened", detail)
            return int(row["id"])
        existing = conn.execute("SELECT id FROM tickets WHERE thread_id = %s", (thread_id,)).fetchone()
        return int(existing["id"])


def resolve_ticket(pool: ConnectionPool, thread_id: str) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE tickets SET status = 'resolved', updated_at = now() WHERE thread_id = %s AND status = 'open'", (thread_id,))


def send_reply(pool: ConnectionPool, thread_id: str, *, recipient: str | None, kind: str, body: str) -> bool:
    """Queue the thread's one outbound reply (with its audit event, atomically); False if it
    was already queued."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO outbox (thread_id, recipient, kind, body) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (thread_id) DO NOTHING RETURNING id",
            (thread_id, recipient, kind, body),
        ).fetchone()
        if row is not None:
            record_event_on(conn, thread_id, "signoff", "reply_sent", {"outbox_id": row["id"], "kind": kind})
    return row is not None
