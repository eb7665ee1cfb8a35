"""Progress events, persisted and published, so any shell can follow a thread wherever it runs.

A run's events (node start/end with duration and model calls, retries, fallbacks, tokens, the
stop) go to `progress_events`, and each batch NOTIFYs `signoff_progress` with the thread id.
`signoff watch` replays the rows it missed and then follows the notifications (polling too,
in case one is lost). They are what a person watches, not what makes a thread durable (that
is the checkpoint): the writer batches them off the run's path, so a run never waits for its
progress to be written, except for the stop, which is written before the job is closed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
from psycopg_pool import ConnectionPool

PROGRESS_CHANNEL = "signoff_progress"
#: Tokens are kept to this many characters per event (a watcher needs the gist, not a dump).
_MAX_TEXT = 2000


@dataclass(frozen=True)
class StoredEvent:
    id: int
    thread_id: str
    event: dict[str, Any]


def for_storage(event: dict[str, Any]) -> dict[str, Any]:
    """The event as a watcher needs it: JSON only, no state update beyond its warnings."""
    return json.loads(stored_json(event))


def stored_json(event: dict[str, Any]) -> str:
    """`for_storage`, as the JSON text written (serialised once: a worker writes every token)."""
    slim = {k: v for k, v in event.items() if k != "update"}
    update = event.get("update")
    if isinstance(update, dict) and update.get("warnings"):
        slim["update"] = {"warnings": [str(w)[:300] for w in update["warnings"]]}
    if isinstance(slim.get("text"), str) and "m" not in slim:  # a message's chunk stays whole: clients join them
        slim["text"] = slim["text"][:_MAX_TEXT]
    if slim.get("error") is not None:
        slim["error"] = str(slim["error"])[:500]
    return _dumps(slim)


def _dumps(value: dict[str, Any]) -> str:
    """JSON text of an event: orjson where installed (LangSmith, under LangChain, brings it),
    several times faster than json on the path every node and token of every run takes
    (a worker's runs, and every command's listing), and it writes NaN as null where json writes a token jsonb refuses."""
    try:
        import orjson
    except ImportError:
        return json.dumps(value, default=str)
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits, a cycle: json says it its way
        return json.dumps(value, default=str)


#: One statement, so one round trip: the events, the notifications to each thread's watchers,
#: and whether the commit waits for its WAL flush (set_config(..., true) lasts the transaction,
#: which autocommit ends with this statement).
_WRITE = (
    "WITH sync AS (SELECT set_config('synchronous_commit', %s, true) AS v), "
    "ins AS (INSERT INTO progress_events (thread_id, event) SELECT t, e::jsonb FROM unnest(%s::text[], %s::text[]) AS x(t, e) "
    "  RETURNING thread_id) "
    "SELECT pg_notify(%s, t.thread_id) FROM (SELECT DISTINCT thread_id FROM ins) t, sync"
)


def write_now(pool: ConnectionPool, items: list[tuple[str, dict[str, Any]]], *, durable: bool = False) -> None:
    """Insert events (thread id, event) and notify each thread's watchers, in one statement.

    Progress is not the durable record (the checkpoint is): no WAL flush is waited for,
    unless `durable` (a run's stop, which must outlive the command that printed it)."""
    if not items:
        return
    with pool.connection() as conn:
        conn.execute(_WRITE, ("on" if durable else "off", [t for t, _ in items], [stored_json(e) for _, e in items], PROGRESS_CHANNEL))


class _After:
    """A marker in the writer's queue: hand `token` to `on_written` once what came before is written."""

    __slots__ = ("token",)

    def __init__(self, token: Any) -> None:
        self.token = token


class EventWriter:
    """Batches events from every run of a worker and writes them from one background thread,
    every `interval` seconds or sooner when `flush()` is asked (a stop).

    `after_written(token)`: once every event appended before it is written, the token goes
    to `on_written`, with all the other tokens of that batch, in one call. A worker closes
    its jobs this way: each run used to write its stop, then close its job, two
    round trips in the run's thread; now a batch of runs costs the writer two statements,
    and a job still never closes before its stop is written (a watcher never misses it)."""

    def __init__(self, pool: ConnectionPool, *, interval: float = 0.05,
                 on_written: Callable[[list[Any]], None] | None = None) -> None:
        self.pool = pool
        self.interval = interval
        self.on_written = on_written
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | _After | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="signoff-events", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    def append(self, thread_id: str, event: dict[str, Any]) -> None:
        self._queue.put((thread_id, event))

    def after_written(self, token: Any) -> None:
        """Hand `token` to `on_written` once everything appended so far is written (or failed
        to be: progress is best effort, and what waits on it must happen anyway)."""
        assert self.on_written is not None, "after_written needs an on_written callback"
        self._queue.put(_After(token))

    def flush(self, *, durable: bool = False) -> None:
        """Write everything appended so far (by any run) now; `durable`: wait for the WAL flush."""
        self._drain(durable=durable)

    def _drain(self, *, durable: bool = False) -> None:
        with self._lock:
            items: list[tuple[str, dict[str, Any]]] = []
            tokens: list[Any] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _After):
                    tokens.append(item.token)
                elif item is not None:
                    items.append(item)
            try:
                write_now(self.pool, items, durable=durable)
            except psycopg.Error:
                pass  # progress is best effort: the checkpoint, not this table, is the record
            if tokens and self.on_written is not None:
                try:
                    self.on_written(tokens)
                except Exception:  # noqa: BLE001 - the writer thread must live on; on_written reports its own failures
                    pass

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            self._drain()

    def close(self) -> None:
        """Stop the writer; what is left (an inline run's stop) is written durably. Wakes the
        writer at once (not after its interval: a command's run would end up to 50 ms later)."""
        self._stopped.set()
        self._thread.join(5)
        self._drain(durable=True)


def read_since(pool: ConnectionPool, thread_id: str, after_id: int = 0) -> list[StoredEvent]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, thread_id, event FROM progress_events WHERE thread_id = %s AND id > %s ORDER BY id",
            (thread_id, after_id),
        ).fetchall()
    return [StoredEvent(r["id"], r["thread_id"], r["event"]) for r in rows]


def last_id(pool: ConnectionPool, thread_id: str) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) AS id FROM progress_events WHERE thread_id = %s", (thread_id,)).fetchone()
    return int(row["id"])  # type: ignore[index]


def follow(url: str, pool: ConnectionPool, thread_id: str, after_id: int = 0, *, poll: float = 1.0) -> Iterator[StoredEvent | None]:
    """Every event of the thread after `after_id` as it is written, and None after each
    `poll` seconds without one (so the caller can look around); endless, the caller stops.
    LISTEN comes first, then the read, so nothing written in between is missed."""
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {PROGRESS_CHANNEL}")
        while True:
            batch = read_since(pool, thread_id, after_id)
            for stored in batch:
                after_id = stored.id
                yield stored
            if not batch and not wait_for_notify(listener, poll, payload=thread_id):
                yield None


def wait_for_notify(conn: psycopg.Connection[Any], timeout: float, *, payload: str | None = None) -> bool:
    """Block until a notification (with this payload, if given) arrives on `conn`, or
    `timeout` passes; True if one came."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        for notify in conn.notifies(timeout=left, stop_after=1):
            if payload is None or notify.payload == payload:
                return True


_listeners: set[tuple[str, str]] = set()
_listeners_mutex = threading.Lock()


def listen_in_background(conninfo: str, channel: str, dispatch: Callable[[str], None], *, name: str) -> bool:
    """LISTEN on `channel` in a daemon thread for the life of the process (once per database
    and channel) and hand each notification's payload to `dispatch`; False if one already
    listens. A dropped connection is reconnected after a second: what the notifications wake
    (run cancels, API waiters) also polls or repeats itself, so a blink delays it, never loses it."""
    with _listeners_mutex:
        if (conninfo, channel) in _listeners:
            return False
        _listeners.add((conninfo, channel))
    threading.Thread(target=_listen_forever, args=(conninfo, channel, dispatch), name=name, daemon=True).start()
    return True


def _listen_forever(conninfo: str, channel: str, dispatch: Callable[[str], None]) -> None:
    while True:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {channel}")
                while True:
                    for notify in conn.notifies(timeout=1.0):
                        dispatch(notify.payload)
        except Exception:  # noqa: BLE001 - the database blinked (or a dispatch failed): listen again
            time.sleep(1.0)
