"""Browser sessions of the web inbox, kept on the server (migration 011).

The cookie holds a random id and nothing else; the row says which reviewer token it was
opened with and when it ends. So signing out ends the session for every copy of the cookie,
a session cannot outlive its fixed end whatever the browser keeps, and revoking the token
ends it too (the token is re-checked on every request). Only the id's SHA-256 is stored: a
reader of the table cannot take a session over.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from psycopg_pool import ConnectionPool

#: Longest a session lasts, signed in once, however active.
SESSION_HOURS = 12
#: Longest cookie value looked up (a session id is 43 characters).
_MAX_ID_CHARS = 100


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(pool: ConnectionPool, token_id: int, now: datetime, hours: float = SESSION_HOURS) -> str:
    """A new session for the reviewer of `token_id`, until `now` + `hours`; its id (the
    cookie's value). Sessions already ended are deleted on the way, so the table stays small."""
    session_id = secrets.token_urlsafe(32)
    with pool.connection() as conn:
        conn.execute("DELETE FROM web_sessions WHERE expires_at <= %s", (now,))
        conn.execute("INSERT INTO web_sessions (id_hash, token_id, created_at, expires_at) VALUES (%s, %s, %s, %s)",
                     (_hash(session_id), token_id, now, now + timedelta(hours=hours)))
    return session_id


def session_token(pool: ConnectionPool, session_id: str, now: datetime) -> int | None:
    """The token id a live session was opened with, or None (unknown, signed out, ended)."""
    if not session_id or len(session_id) > _MAX_ID_CHARS:
        return None
    with pool.connection() as conn:
        row = conn.execute("SELECT token_id FROM web_sessions WHERE id_hash = %s AND expires_at > %s",
                           (_hash(session_id), now)).fetchone()
    return int(row["token_id"]) if row else None


def end_session(pool: ConnectionPool, session_id: str) -> None:
    """Sign out: the session ends for every copy of its cookie."""
    if session_id and len(session_id) <= _MAX_ID_CHARS:
        with pool.connection() as conn:
            conn.execute("DELETE FROM web_sessions WHERE id_hash = %s", (_hash(session_id),))
