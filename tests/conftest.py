"""Test fixtures: one embedded PostgreSQL for the session, a fresh database per test."""

from __future__ import annotations

import os
from contextlib import contextmanager
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from checkpoint.database import open_pool
from checkpoint.embedded import embedded_url
from checkpoint.migrations import migrate
from nodes.context import SignoffContext
from nodes.resilient import ResiliencePolicy

FAST_POLICY = ResiliencePolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, retry_after_cap=2.0)


@pytest.fixture(scope="session")
def pg_home() -> Iterator[Path]:
    """SIGNOFF_HOME of this test session's own embedded server (a short path: the unix socket
    limit), so two sessions never share or stop each other's server; removed afterwards."""
    import shutil
    import tempfile

    given = os.environ.get("SIGNOFF_TEST_HOME")
    root = Path(given) if given else Path(tempfile.mkdtemp(prefix="sgt-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    yield root
    if not given:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url(pg_home: Path) -> Iterator[str]:
    """The session's embedded PostgreSQL, stopped when the session ends."""
    from checkpoint.embedded import stop_embedded

    url = embedded_url(pg_home)
    try:
        yield url
    finally:
        stop_embedded(pg_home)


@contextmanager
def scratch_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A new database on the server for the block, dropped afterwards (even if still in use)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # Test data need not survive a power cut: commits skip the WAL fsync (several per step).
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        yield server_url.replace("/postgres?", f"/{name}?")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A database of its own for this test, dropped afterwards."""
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = open_pool(database_url)
    migrate(pool)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def make_context(pool: ConnectionPool):
    def make(models, **overrides) -> SignoffContext:
        return SignoffContext(models=models, pool=pool, policy=overrides.pop("policy", FAST_POLICY), **overrides)

    return make


def count_rows(pool: ConnectionPool, table: str, **where: object) -> int:
    clause = " AND ".join(f"{k} = %s" for k in where) or "true"
    with pool.connection() as conn:
        return conn.execute(f"SELECT count(*) AS n FROM {table} WHERE {clause}", tuple(where.values())).fetchone()["n"]


@pytest.fixture
def server():
    """An OpenAI-compatible model server for this test (tests override it to add rules)."""
    from tests.fault_server import FaultServer

    with FaultServer() as server:
        yield server


@pytest.fixture
def escalating_server():
    """A model server whose support graph always escalates (technical intent, no answer)."""
    from tests.fault_server import FaultServer, ok
    from tests.scripted import CANNOT_ANSWER

    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "technical"}'))
        server.rule("technical support agent", ok(CANNOT_ANSWER))
        yield server


@pytest.fixture
def env(database_url: str, server, tmp_path: Path) -> dict[str, str]:
    """The environment of a `signoff` command that uses this test's database and server."""
    return {
        "DATABASE_URL": database_url,
        "SIGNOFF_HOME": str(tmp_path / "home"),
        "SIGNOFF_MODEL": "openai:test-model",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "test-key",
    }


@pytest.fixture
def cli(env: dict[str, str]):
    """`cli("start", "support", "...")` runs the CLI in-process with `env` (and any variables
    given as keywords: `cli("approve", ..., SIGNOFF_TOKEN=token)`)."""
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()

    def invoke(*args: str, **extra: str):
        return runner.invoke(app, list(args), env={**env, **extra})

    return invoke


@pytest.fixture
def reviewer(env: dict[str, str], pool: ConnectionPool):
    """`reviewer("alice")("approve", ...)`: the CLI run by reviewer "alice", through a reviewer
    token of hers in SIGNOFF_TOKEN (who acts is never a typed name)."""
    from typer.testing import CliRunner

    from checkpoint import tokens
    from cli import app

    made: dict[str, str] = {}

    def as_reviewer(name: str):
        if name not in made:
            made[name] = tokens.create(pool, name)
        token = made[name]

        def invoke(*args: str):
            return CliRunner().invoke(app, list(args), env={**env, "SIGNOFF_TOKEN": token})

        return invoke

    return as_reviewer


def review_digest(database_url: str, thread_id: str) -> str:
    """The digest of what the thread waits to have signed off, as `show` prints it: what a
    reviewer passes to `approve --expect` (approving without a terminal requires it)."""
    from runtime.thread_runner import ThreadRunner
    from nodes.gates import content_digest

    pool = open_pool(database_url)
    try:
        runner = ThreadRunner.for_thread(pool, thread_id)
        return content_digest(runner.spec.review_content(runner.snapshot(thread_id).values))
    finally:
        pool.close()


def expect(database_url: str, thread_id: str) -> tuple[str, str]:
    """`--expect DIGEST` for approving the thread's current content."""
    return ("--expect", review_digest(database_url, thread_id))
