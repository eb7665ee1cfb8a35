"""Count the statements and round trips a block of code sends to PostgreSQL (benchmarks only).

Deterministic where timings on a shared machine are not: wraps psycopg's cursor `execute` /
`executemany`, its internal command path (BEGIN, COMMIT, SAVEPOINT of `conn.transaction()`)
and pipeline blocks, in every thread of the process. A statement outside a pipeline is one
round trip; a pipeline block (PostgresSaver's writes) is one round trip for all it sends.
Background threads (the progress writer) are counted too: their work is the run's.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

_counts: Counter[str] = Counter()
_mutex = threading.Lock()
_installed = False


def _add(key: str, n: int = 1) -> None:
    with _mutex:
        _counts[key] += n


def install() -> None:
    """Patch psycopg once (idempotent)."""
    global _installed
    if _installed:
        return
    import psycopg
    from psycopg._connection_base import BaseConnection

    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    command = BaseConnection._exec_command
    pipe_exit = psycopg.Pipeline.__exit__

    def counted_execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        _add("statements")
        if not self._conn._pipeline:
            _add("round_trips")
        return execute(self, query, params, **kw)

    def counted_executemany(self: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
        params_seq = list(params_seq)
        _add("statements", len(params_seq))
        if not self._conn._pipeline:
            _add("round_trips", len(params_seq))
        return executemany(self, query, params_seq, **kw)

    def counted_command(self: Any, cmd: Any, *args: Any, **kw: Any) -> Any:
        _add("statements")
        if not self._pipeline:
            _add("round_trips")
        return command(self, cmd, *args, **kw)

    def counted_pipe_exit(self: Any, *args: Any) -> Any:
        _add("round_trips")
        return pipe_exit(self, *args)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
    BaseConnection._exec_command = counted_command  # type: ignore[method-assign]
    psycopg.Pipeline.__exit__ = counted_pipe_exit  # type: ignore[method-assign]
    _installed = True


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Counts of the block (statements, round_trips), filled in when it ends."""
    install()
    result: dict[str, int] = {}
    with _mutex:
        before = Counter(_counts)
    yield result
    with _mutex:
        after = Counter(_counts)
    result.update({k: after[k] - before[k] for k in ("statements", "round_trips")})
