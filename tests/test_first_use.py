"""First use: several commands started at the same instant on a database nobody has migrated,
or on a SIGNOFF_HOME with no database at all, all finish.

Each command is a real process whose imports are done before the round starts
(tests/warm_cli.py), so all of them reach the database within milliseconds of each other;
that is when one migrating process used to deadlock with another through the client
(a connection waiting for the migration lock holds a snapshot, which PostgresSaver's
CREATE INDEX CONCURRENTLY on the lock holder's other connection waits for).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint.embedded import stop_embedded
from tests.conftest import scratch_database
from tests.fault_server import FaultServer, ok
from tests.procs import ROOT, WARM_SCRIPT, process_env

COMMANDS = (
    ["start", "support", "The app crashes on start", "--thread", "first"],
    ["pending"],
    ["db", "migrate"],
    ["kb", "load"],
)


def launch_together(commands: list[list[str]], env: dict[str, str], timeout: float = 90.0) -> list[subprocess.CompletedProcess[str]]:
    """Start warm processes, wait until every one is ready, then release them at once."""
    procs = [
        subprocess.Popen([sys.executable, str(WARM_SCRIPT)], cwd=ROOT, env=process_env({}), text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc, args in zip(procs, commands):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"args": args, "env": process_env(env)}) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.stdin = None  # handed over: communicate() below only reads
        results = []
        for proc, args in zip(procs, commands):
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"`signoff {' '.join(args)}` hung for {timeout}s on first use") from None
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def model_server():
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "technical"}'))
        yield server


def env_for(model_server: FaultServer, home: Path, **extra: str) -> dict[str, str]:
    return {"SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:test-model", "OPENAI_BASE_URL": model_server.base_url,
            "OPENAI_API_KEY": "test-key", **extra}


@pytest.mark.parametrize("round_", range(20))
def test_four_commands_at_once_on_an_unmigrated_database_all_finish(round_: int, server_url: str, model_server: FaultServer, tmp_path: Path):
    with scratch_database(server_url) as url:
        results = launch_together([list(c) for c in COMMANDS], env_for(model_server, tmp_path, DATABASE_URL=url))
    for result in results:
        assert result.returncode == 0, (result.args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("round_", range(2))
def test_four_commands_at_once_on_a_fresh_home_share_one_new_embedded_server(round_: int, model_server: FaultServer):
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="sgf-", dir="/tmp"))  # short: the server's unix socket lives here
    try:
        results = launch_together([list(c) for c in COMMANDS], env_for(model_server, home))
        for result in results:
            assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    finally:
        stop_embedded(home)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
