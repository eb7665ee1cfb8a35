"""Worker processes for tests: start `signoff worker` for real, always stop it afterwards."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from checkpoint import jobs
from graphs.registry import get_spec
from psycopg_pool import ConnectionPool
from tests.procs import ROOT, CliProcess, process_env

WORKER_ARGS = ["-m", "cli", "worker"]


def spawn_worker(env: dict[str, str], *args: str) -> CliProcess:
    popen = subprocess.Popen(
        [sys.executable, *WORKER_ARGS, *args], cwd=ROOT, env=process_env(env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
    )
    proc = CliProcess(popen)
    proc.wait_for(r"worker \d+ started", timeout=60)
    return proc


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator:
    """`workers(*args, env=...)` starts a worker process; every one is SIGKILLed at teardown
    if the test left it running (also when the test failed)."""
    started: list[CliProcess] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> CliProcess:
        proc = spawn_worker({**env, **(extra_env or {})}, *args)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.popen.poll() is None:
                proc.kill()
            for stream in (proc.popen.stdout, proc.popen.stderr):
                if stream is not None:
                    stream.close()


def submit(pool: ConnectionPool, graph: str, thread_id: str, text: str, **options: object) -> None:
    """What `signoff start GRAPH TEXT --detach` writes: the thread, queued, and its job."""
    spec = get_spec(graph)
    jobs.submit(pool, thread_id, graph, text, graph_input=spec.make_input(text, dict(options)),
                deadline_hours=spec.deadline_hours, actor="tester")
