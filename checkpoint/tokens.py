"""Reviewer API tokens: who decides over HTTP, provably.

A token is shown once, at creation; only its SHA-256 is stored. A plain hash, not a slow
password hash: the token is 256 random bits, so there is nothing to brute-force, and every
API request must check it quickly. The decision's actor is the token's owner, never a name
the caller types.

Creating and revoking tokens are administrative acts (checkpoint/identity.py says who may):
each row keeps who minted and who revoked it, and each act is audited, so a token minted by
the requester of a refund after the request is recognised and never counts for it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.errors import Conflict, InvalidInput, NotFound
from checkpoint.policy import ADMIN_TRAIL

PREFIX = "sgn_"
#: The audit's actor for a token minted or revoked by a program rather than through the CLI.
UNRECORDED = "(not recorded)"
MAX_NAME_CHARS = 100
#: Names Signoff records for its own actions; no person acts under them.
_RESERVED = re.compile(r"(signoff|cli)(\s*\(.*\))?", re.IGNORECASE)


@dataclass(frozen=True)
class Reviewer:
    token_id: int
    name: str
    #: who minted the token (None: not recorded)
    created_by: str | None = None


def valid_name(name: str) -> str:
    """One printable line, not empty, not one of Signoff's own actor names."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the reviewer name is not valid UTF-8: pass plain text") from None
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or any(not ch.isprintable() for ch in name):
        raise InvalidInput(f"the reviewer name must be one line of 1-{MAX_NAME_CHARS} printable characters")
    if _RESERVED.fullmatch(name):
        raise InvalidInput(f"the reviewer name {name!r} is reserved for Signoff's own actions: pick a person's name")
    return name


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create(pool: ConnectionPool, name: str, created_by: str | None = None, created_through: str | None = None) -> str:
    """A new token for `name`, minted by `created_by` and audited (its only copy: the caller
    shows it once). Conflict if the name already has a live token (revoke it first).
    `created_by` None: minted by a program, not by an administrator through the CLI;
    `created_through`: who minted the token `created_by` acted through, if any."""
    name = valid_name(name)
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute("INSERT INTO reviewer_tokens (name, token_hash, created_by, created_through) VALUES (%s, %s, %s, %s) "
                               "RETURNING id", (name, _hash(token), created_by, created_through)).fetchone()
            record_event_on(conn, ADMIN_TRAIL, created_by or UNRECORDED, "token_created", {"name": name, "token": int(row["id"])})
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"{name!r} already has a live token: `signoff token revoke {name}` first, then create a new one") from None
    return token


def revoke(pool: ConnectionPool, name: str, revoked_by: str | None = None) -> int:
    """Revoke the live token of `name`, audited as `revoked_by`'s act; NotFound if there is none."""
    name = valid_name(name)
    with pool.connection() as conn, conn.transaction():
        row = conn.execute("UPDATE reviewer_tokens SET revoked_at = now(), revoked_by = %s WHERE name = %s AND revoked_at IS NULL RETURNING id",
                           (revoked_by, name)).fetchone()
        if row is not None:
            record_event_on(conn, ADMIN_TRAIL, revoked_by or UNRECORDED, "token_revoked", {"name": name, "token": int(row["id"])})
    if row is None:
        raise NotFound(f"no live token for {name!r}: see `signoff token list`")
    return int(row["id"])


#: how stale a token's "last used" may get before a request writes it again
TOUCH_SECONDS = 60


def authenticate(pool: ConnectionPool, token: str) -> Reviewer | None:
    """The reviewer a presented token belongs to, if it is live (and note its use).

    The use is written at most once a minute per token (`token list` shows it to the
    minute): a write on every request made all of a client's concurrent requests queue on
    the token's row lock and its commit, one after another."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with pool.connection() as conn:
        row = conn.execute(
            "WITH live AS (SELECT id, name, created_by, last_used_at FROM reviewer_tokens WHERE token_hash = %s AND revoked_at IS NULL), "
            "touched AS (UPDATE reviewer_tokens r SET last_used_at = now() FROM live WHERE r.id = live.id "
            "  AND (live.last_used_at IS NULL OR live.last_used_at < now() - make_interval(secs => %s))) "
            "SELECT id, name, created_by FROM live",
            (_hash(token), TOUCH_SECONDS),
        ).fetchone()
    return Reviewer(int(row["id"]), row["name"], row["created_by"]) if row else None


def reviewer_by_id(pool: ConnectionPool, token_id: int) -> Reviewer | None:
    """The reviewer of a session opened with token `token_id`, while that token is live."""
    with pool.connection() as conn:
        row = conn.execute("SELECT id, name FROM reviewer_tokens WHERE id = %s AND revoked_at IS NULL", (token_id,)).fetchone()
    return Reviewer(int(row["id"]), row["name"]) if row else None


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: str | None = None  # None: minted before Signoff recorded who did
    revoked_by: str | None = None


def list_tokens(pool: ConnectionPool) -> list[TokenRow]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT id, name, created_at, revoked_at, last_used_at, created_by, revoked_by "
                            "FROM reviewer_tokens ORDER BY id").fetchall()
    return [TokenRow(**r) for r in rows]
