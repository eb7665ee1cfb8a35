"""Requests refused before anyone signed in (no token, a wrong one, a bad link, a forged
form): audited as one counted row per source address and minute, and once a source has had
`limit` of them in a minute, every further request from it is answered 429 until the minute
ends, before any token is checked or any body read.

Why a window count in the audit row rather than a token bucket in memory: the row is what the
audit needs anyway, and several `serve` processes share it, so a source cannot spread its
attempts over them. What is kept in memory is only which sources are refused now (and how
many of their 429s are still to be added to the row, written at most once a second each), so
a flood costs no database write per request.

The source is the connecting address: behind a proxy that is the proxy's, so all clients
share one limit (put the limit in the proxy then, or raise `limit`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from psycopg_pool import ConnectionPool

from checkpoint.audit import record_anonymous_refusal

#: Sources remembered at most; beyond it, the ones whose refusal ended go first.
MAX_SOURCES = 100_000


@dataclass
class RefusalLimit:
    """The per-source limit on refused anonymous requests, and who is over it now."""

    limit: int = 30
    window_seconds: int = 60
    _until: dict[str, float] = field(default_factory=dict)  # source -> end of its window (unix seconds)
    _unwritten: dict[str, int] = field(default_factory=dict)  # source -> 429s not yet added to its row
    _written_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def window(self, now: datetime) -> tuple[str, float]:
        """The window `now` falls in: its label (start, ISO 8601) and its end."""
        start = int(now.timestamp()) // self.window_seconds * self.window_seconds
        return datetime.fromtimestamp(start, timezone.utc).isoformat(), float(start + self.window_seconds)

    def retry_after(self, source: str, now: datetime) -> int | None:
        """Seconds until `source` may try again, if it is over the limit now."""
        until = self._until.get(source)
        if until is None or until <= now.timestamp():
            return None
        return max(1, int(until - now.timestamp() + 0.999))

    def counted(self, source: str, count: int, now: datetime) -> None:
        """Note that `source` has `count` refusals in the current window."""
        if count >= self.limit:
            with self._lock:
                if len(self._until) >= MAX_SOURCES:
                    stamp = now.timestamp()
                    for gone in [s for s, until in self._until.items() if until <= stamp]:
                        self._forget(gone)
                self._until[source] = self.window(now)[1]

    def refused_again(self, source: str, now: datetime) -> int:
        """One more 429 for `source`; how many to add to its audit row now (0: later)."""
        with self._lock:
            self._unwritten[source] = self._unwritten.get(source, 0) + 1
            if now.timestamp() - self._written_at.get(source, 0.0) < 1.0:
                return 0
            self._written_at[source] = now.timestamp()
            return self._unwritten.pop(source)

    def _forget(self, source: str) -> None:
        self._until.pop(source, None)
        self._unwritten.pop(source, None)
        self._written_at.pop(source, None)


def source_of(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def audit_anonymous(pool: ConnectionPool, limits: RefusalLimit, scope: dict[str, Any], status: int, reason: str,
                    now: datetime, times: int = 1) -> None:
    """Add `times` refusals of `status` to the source's row for this window, and refuse the
    source from now on if that reaches the limit."""
    source = source_of(scope)
    label, _ = limits.window(now)
    count = record_anonymous_refusal(pool, source=source, window=label, status=status, method=str(scope.get("method", "")),
                                     path=str(scope.get("path", "")), reason=reason, times=times)
    limits.counted(source, count, now)
