"""Driving real `signoff` processes from tests: start them, watch their output, kill them at
a chosen moment, and stop their database statements where a test wants them stopped.

Nothing here hooks into product code. A test decides when to kill by reading what the
process prints, by what the fault server has been asked, or by what the process is doing in
PostgreSQL (a statement held by a trigger the test put in its own database).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import psycopg

ROOT = Path(__file__).resolve().parent.parent
WARM_SCRIPT = Path(__file__).with_name("warm_cli.py")

#: Single-key advisory lock the test holds while a trigger makes a statement wait for it.
BLOCK_KEY = 0x74657374626C6B  # "testblk"


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy and return it (a wait for an event, not a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class CliProcess:
    """A running CLI process whose stdout and stderr are read line by line as they come."""

    def __init__(self, popen: subprocess.Popen[str], *, skip_ready: bool = False) -> None:
        self.popen = popen
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._skip_ready = skip_ready
        self._readers = [
            threading.Thread(target=self._read, args=(popen.stdout, self.out, skip_ready), daemon=True),
            threading.Thread(target=self._read, args=(popen.stderr, self.err, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str], skip_first: bool) -> None:
        for line in stream:
            if skip_first and line.strip() == "ready":
                skip_first = False
                continue
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        return "\n".join(self.out + self.err)

    def wait_for(self, pattern: str, *, stream: str = "out", timeout: float = 30.0) -> re.Match[str]:
        """The first line of `stream` matching `pattern`; fails if the process ends first."""
        regex = re.compile(pattern)
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    match = regex.search(line)
                    if match:
                        return match
                if self.popen.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(f"process exited ({self.popen.returncode}) before printing /{pattern}/:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no /{pattern}/ within {timeout}s:\n{self.output}")
                self._changed.wait(min(left, 0.1))

    def kill(self) -> int | None:
        """SIGKILL now; the exit status (-9, or what it exited with if it was already gone)."""
        self.popen.send_signal(signal.SIGKILL)  # a no-op once the process has been reaped
        return self.wait()

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code


def process_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def spawn_cli(args: Iterable[str], env: dict[str, str]) -> CliProcess:
    """`python -m cli ARGS`, exactly as a user runs it."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=process_env(env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
    )
    return CliProcess(popen)


class WarmCli:
    """CLI processes started one run ahead (tests/warm_cli.py): `run()` hands over the one
    waiting with its imports done and starts the next."""

    def __init__(self) -> None:
        self._spare: subprocess.Popen[str] | None = None

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(WARM_SCRIPT)], cwd=ROOT, env=process_env({}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )

    def run(self, args: Iterable[str], env: dict[str, str]) -> CliProcess:
        popen = self._spare or self._spawn()
        self._spare = self._spawn()
        assert popen.stdin is not None
        popen.stdin.write(json.dumps({"args": list(args), "env": process_env(env)}) + "\n")
        popen.stdin.close()
        return CliProcess(popen, skip_ready=True)

    def close(self) -> None:
        if self._spare is not None:
            self._spare.kill()
            self._spare.wait()
            for stream in (self._spare.stdin, self._spare.stdout, self._spare.stderr):
                if stream is not None:
                    stream.close()
            self._spare = None


class StatementBlock:
    """Make chosen statements of other sessions wait until the test lets them go.

    A trigger on a table (in the test's own database) takes a shared advisory lock that the
    test holds exclusively; a statement it fires for waits there, visibly in
    pg_stat_activity. The test then kills the client, and either lets the statement run
    (`release`: it lands, as a write the dying process had sent) or ends its session
    (`terminate`: it never lands).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(
            "CREATE OR REPLACE FUNCTION signoff_test_block() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_advisory_xact_lock_shared({BLOCK_KEY}); RETURN NEW; END $$"
        )
        self.triggers: list[tuple[str, str]] = []
        self.held = False

    def arm(self, table: str, event: str = "INSERT", when: str | None = None) -> None:
        """Hold `event` statements on `table` (optionally only rows matching `when`)."""
        if not self.held:
            self.conn.execute("SELECT pg_advisory_lock(%s)", (BLOCK_KEY,))
            self.held = True
        name = f"signoff_test_block_{len(self.triggers)}"
        condition = f" WHEN ({when})" if when else ""
        self.conn.execute(
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW{condition} EXECUTE FUNCTION signoff_test_block()"
        )
        self.triggers.append((name, table))

    def waiting(self) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(
                "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
            ).fetchall()

    def wait_blocked(self, timeout: float = 30.0) -> dict[str, Any]:
        """The session whose statement now waits on the block."""
        return wait_until(lambda: (self.waiting() or [None])[0], timeout=timeout, what="a statement held by the test's trigger")

    def terminate(self, pid: int) -> None:
        self.conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    def release(self) -> None:
        """Let held statements go, wait until none is left waiting, and drop the triggers."""
        if self.held:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (BLOCK_KEY,))
            self.held = False
        wait_until(lambda: not self.waiting(), timeout=30, what="held statements to finish")
        for name, table in self.triggers:
            self.conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        self.triggers.clear()

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.conn.close()


def sessions_named(url: str, application_name: str) -> int:
    """Open database sessions of processes started with PGAPPNAME=application_name."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)).fetchone()[0]  # type: ignore[index]


def table_counts(url: str) -> dict[str, int]:
    """Row counts of every table in the public schema (application and checkpoint tables)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
