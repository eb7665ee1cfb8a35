"""Bad input, for every CLI command: one clear line, a non-zero exit, and no row changed.

The table below has rows for every command of the typer app; a command added without a row
fails test_every_command_has_a_bad_input_row. Each row runs against one database holding a
thread waiting at its gate and a finished one, and compares the row counts of every table
(application and checkpoint tables) before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import typer
from typer.testing import CliRunner

from checkpoint.settings import MAX_INPUT_BYTES
from cli import app
from tests.conftest import review_digest, scratch_database
from tests.fault_server import FaultServer, ok
from tests.procs import spawn_cli, table_counts

WAITING, FINISHED = "waiting-1", "finished-1"
OVERSIZED = "x" * (MAX_INPUT_BYTES + 1)
NOT_UTF8 = "caf\udce9"  # what Python makes of the bytes b"caf\xe9" in argv (surrogateescape)
LONG_ID = "t" * 65


@dataclass(frozen=True)
class Row:
    command: str  # the command path, e.g. "start support"
    args: tuple[str, ...]  # what follows it
    says: str  # in the one line printed
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.says[:40]}"


def row(command: str, *args: str, says: str, **env: str) -> Row:
    return Row(command, args, says, env)


def id_rows(command: str, *before: str) -> list[Row]:
    """Unknown, malformed, too long and not-UTF-8 thread ids for a command taking one."""
    return [
        row(command, *before, "nope", says="no thread 'nope'"),
        row(command, *before, "bad id!", says="'bad id!' is not a thread id"),
        row(command, *before, LONG_ID, says="is not a thread id"),
        row(command, *before, NOT_UTF8, says="is not a thread id"),
    ]


def text_rows(command: str, *after: str, what: str = "text") -> list[Row]:
    """Empty, oversized and not-UTF-8 text for a command whose first argument is text."""
    return [
        row(command, "   ", *after, says=f"the {what} is empty"),
        row(command, OVERSIZED, *after, says=f"over the {MAX_INPUT_BYTES}-byte limit"),
        row(command, NOT_UTF8, *after, says=f"the {what} is not valid UTF-8"),
    ]


def start_rows(graph: str, what: str) -> list[Row]:
    cmd = f"start {graph}"
    return text_rows(cmd, what=what) + [
        row(cmd, "hello", "--thread", "bad id!", says="is not a thread id"),
        row(cmd, "hello", "--thread", LONG_ID, says="is not a thread id"),
        row(cmd, "hello", "--thread", WAITING, says=f"thread {WAITING} already exists"),
        row(cmd, "hello", "--deadline", "-1", says="--deadline must be a positive number"),
        row(cmd, "hello", "--deadline", "abc", says="Invalid value for '--deadline'"),
        row(cmd, "hello", f"--{graph}-nope", says="No such option"),
        row(cmd, "hello", says=f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS must be a number", **{f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS": "soon"}),
        row(cmd, "hello", says="SIGNOFF_MODEL must be 'local'", SIGNOFF_MODEL="gpt-4"),
    ]


ROWS: list[Row] = [
    *start_rows("support", "message"),
    row("start support", "hello", "--email", NOT_UTF8, says="the email is not valid UTF-8"),
    *start_rows("revision", "text"),
    row("start revision", "hello", "--out", "{a_file}", says="is a file, not a folder"),
    *start_rows("research", "text"),
    row("start research", "hello", "--out", "{a_file}", says="is a file, not a folder"),
    row("pending", "--nope", says="No such option: --nope"),
    row("pending", says="SIGNOFF_CALL_TIMEOUT must be a number", SIGNOFF_CALL_TIMEOUT="soon"),
    *id_rows("show"),
    row("show", says="Missing argument"),
    *id_rows("approve", "--expect", "000000000000"),
    row("approve", WAITING, says="approve needs --expect DIGEST when not run at a terminal"),
    row("approve", FINISHED, "--expect", "000000000000", says=f"thread {FINISHED} is not waiting at a gate"),
    row("approve", WAITING, "--expect", "000000000000", says="the content changed since you reviewed it"),
    row("approve", WAITING, "--note", OVERSIZED, says="the note is"),
    row("approve", WAITING, "--note", NOT_UTF8, says="the note is not valid UTF-8"),
    row("approve", WAITING, "--by", NOT_UTF8, says="the reviewer name is not valid UTF-8"),
    row("approve", WAITING, "extra", says="unexpected extra argument"),
    *id_rows("reject", "--feedback", "shorter"),
    row("reject", WAITING, says="Missing option '--feedback'"),
    row("reject", WAITING, "--feedback", "  ", says="the feedback is empty"),
    row("reject", WAITING, "--feedback", OVERSIZED, says="over the 65536-byte limit"),
    row("reject", WAITING, "--feedback", NOT_UTF8, says="the feedback is not valid UTF-8"),
    row("reject", FINISHED, "--feedback", "shorter", says=f"thread {FINISHED} is not waiting at a gate"),
    row("reject", WAITING, "--feedback", "shorter", "--expect", "x", says="the content changed since you reviewed it"),
    *id_rows("resume"),
    row("resume", WAITING, says=f"thread {WAITING} is waiting at gate review: approve or reject it"),
    row("recover", "--nope", says="No such option: --nope"),
    row("expire", "--nope", says="No such option: --nope"),
    *id_rows("audit"),
    row("config", "--nope", says="No such option: --nope"),
    row("config", says="SIGNOFF_MAX_ATTEMPTS must be a whole number", SIGNOFF_MAX_ATTEMPTS="many"),
    row("db migrate", "--nope", says="No such option: --nope"),
    row("db migrate", says="cannot reach PostgreSQL", DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("db status", "--nope", says="No such option: --nope"),
    row("kb load", "/nonexistent/articles", says="no such file or folder"),
    row("kb load", "{a_file}", says="{a_file}"),
    *text_rows("kb search", what="query"),
    row("model status", "--nope", says="No such option: --nope"),
    row("model stop", "--nope", says="No such option: --nope"),
    row("corpus add", "/nonexistent/corpus", says="no such file or folder"),
    row("corpus list", "--nope", says="No such option: --nope"),
]


def command_paths(command: typer.core.TyperGroup | object, prefix: str = "") -> list[str]:
    """Every runnable command of the app, e.g. "pending", "db migrate", "start support"."""
    children = getattr(command, "commands", None)
    if not children:
        return [prefix.strip()]
    return [path for name, child in children.items() for path in command_paths(child, f"{prefix} {name}")]


def test_every_command_has_a_bad_input_row():
    commands = command_paths(typer.main.get_command(app))
    assert len(commands) >= 15, commands
    missing = sorted(set(commands) - {r.command for r in ROWS})
    assert not missing, f"commands without a bad-input row: {missing}"


# --- one database with a waiting and a finished thread, for all rows -------------------------


@pytest.fixture(scope="module")
def module_db(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "technical"}'))
        server.rule("technical support agent", ok("ESCALATE"))
        yield server


@pytest.fixture(scope="module")
def env(module_db: str, module_server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("bad-input")
    (home / "a-file").write_text("not a folder\n")
    environment = {
        "DATABASE_URL": module_db, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:test-model",
        "OPENAI_BASE_URL": module_server.base_url, "OPENAI_API_KEY": "test-key", "SIGNOFF_USER": "tester",
    }
    runner = CliRunner()
    for args in (["start", "support", "The app crashes", "--thread", WAITING],
                 ["start", "support", "The app crashes", "--thread", FINISHED], ["approve", FINISHED, "--expect", "{digest}"],
                 ["kb", "load"], ["corpus", "add"]):
        args = [a.replace("{digest}", review_digest(module_db, FINISHED)) if a == "{digest}" else a for a in args]
        result = runner.invoke(app, args, env=environment)
        assert result.exit_code == 0, result.output
    return environment


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_nonzero_and_changes_no_rows(case: Row, env: dict[str, str], module_db: str):
    a_file = str(Path(env["SIGNOFF_HOME"]) / "a-file")
    args = [*case.command.split(), *(a.replace("{a_file}", a_file) for a in case.args)]
    before = table_counts(module_db)
    result = CliRunner().invoke(app, args, env={**env, **case.env})
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and case.says.replace("{a_file}", a_file) in lines[0], lines[0]
    assert "Traceback" not in result.output and "secret" not in result.output
    assert table_counts(module_db) == before


def test_invalid_utf8_bytes_in_argv_are_one_line_nonzero_and_change_no_rows(env: dict[str, str], module_db: str):
    """The real thing: bytes that are not UTF-8 on a real process's command line."""
    before = table_counts(module_db)
    proc = spawn_cli([b"start", b"support", b"caf\xe9 \xff\xfe"], env)  # type: ignore[list-item]
    assert proc.wait() != 0, proc.output
    assert proc.out == [] and len(proc.err) == 1, proc.output
    assert proc.err[0] == "error: the message is not valid UTF-8: pass plain text"
    assert table_counts(module_db) == before
