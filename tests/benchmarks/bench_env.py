"""What the benchmark scripts share: a PostgreSQL of their own, a scratch database, a scripted
model server, the machine they ran on. Not a test module; imported by the scripts only.

A script uses DATABASE_URL's server when set (a new database on it, dropped afterwards), else
an embedded PostgreSQL in a throwaway SIGNOFF_HOME that is stopped and removed at the end, so
each runs in a fresh clone with nothing set up.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runnable without installing signoff


@contextmanager
def postgres_server() -> Iterator[tuple[str, Path]]:
    """(server URL, a scratch SIGNOFF_HOME); the embedded server is stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))  # short: the unix socket path limit
    given = os.environ.get("DATABASE_URL")
    try:
        if given:
            yield given, home
        else:
            from checkpoint.embedded import embedded_url

            url = embedded_url(home)
            try:
                yield url, home
            finally:
                from checkpoint.embedded import stop_embedded

                stop_embedded(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str, prefix: str = "bench") -> Iterator[str]:
    """A new database on the server for the block (synchronous_commit as the product runs:
    on, since the write benchmark measures durable commits), dropped afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def escalating_model_server():  # -> tests.fault_server.FaultServer, started
    """A scripted OpenAI-compatible server whose support threads escalate to their gate."""
    from tests.fault_server import FaultServer, ok

    server = FaultServer().start()
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok("ESCALATE"))
    return server


def cli_env(database_url: str, home: Path, model_url: str) -> dict[str, str]:
    """The environment of a `signoff` process on this database and model server."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
    return {
        **keep, "DATABASE_URL": database_url, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:bench-model",
        "OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "bench-key",
    }


def machine() -> str:
    """One line describing where the figures came from, with how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {sys.version.split()[0]}, "
            f"PostgreSQL {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}, load average {load:.1f}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
