"""Bad input, for every CLI command: one clear line, the exit code of its kind, nothing changed.

The table below has rows for every command of the typer app; a command added without a row
fails test_every_command_has_a_bad_input_row. Each row runs against one database holding a
thread waiting at its gate and a finished one, and compares the row counts of every table
(application and checkpoint tables) and the files under SIGNOFF_HOME before and after. Each
row names the exit code it must give, from the table in docs/errors.md (checkpoint/errors.py).

Hostile values come from one list per kind of argument (numbers, thread ids, names, texts,
paths), so a new option gets the whole list by naming its kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import typer
from typer.testing import CliRunner

from checkpoint.errors import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE
from checkpoint.settings import MAX_INPUT_BYTES
from cli import app
from tests.conftest import review_digest, scratch_database
from tests.fault_server import FaultServer, ok
from tests.scripted import CANNOT_ANSWER
from tests.procs import spawn_cli, table_counts

WAITING, FINISHED = "waiting-1", "finished-1"
OVERSIZED = "x" * (MAX_INPUT_BYTES + 1)
NOT_UTF8 = "caf\udce9"  # what Python makes of the bytes b"caf\xe9" in argv (surrogateescape)
LONG_ID = "t" * 65
ANY_DIGEST = ("--expect", "000000000000")

#: Numbers no deadline, timeout or count may take: each is refused where it enters.
BAD_NUMBERS = ["nan", "inf", "-inf", "1e308", "-1", "0", "1e400"]
#: Thread ids that must never be accepted (a trailing newline once was: `$` matched before it).
BAD_IDS = ["bad id!", LONG_ID, NOT_UTF8, "t1\n", "t1\r", " t1", "t\x1b[2J", "", "../t1", "t1\x00"]
#: Reviewer names that are not one printable line, or are Signoff's own.
BAD_NAMES = ["alice\nfake line", "bob\x1b]8;;http://x\x07", "signoff (deadline)", "signoff", "SIGNOFF", "x" * 101, NOT_UTF8]
#: Texts (messages, notes, feedback, queries) that are refused.
BAD_TEXTS = ["", "   ", "\n\t ", OVERSIZED, NOT_UTF8, "a\x00b"]


@dataclass(frozen=True)
class Row:
    command: str  # the command path, e.g. "start support"
    args: tuple[str, ...]  # what follows it
    says: str  # in the one line printed
    code: int  # the exit code, from the table in docs/errors.md
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.code}:{' '.join(self.args)[:30]!r}:{self.says[:30]}"


def row(command: str, *args: str, says: str, code: int = EXIT_USAGE, **env: str) -> Row:
    return Row(command, args, says, code, env)


def id_rows(command: str, *before: str, after: tuple[str, ...] = ()) -> list[Row]:
    """Unknown and malformed thread ids for a command taking one."""
    return [row(command, *before, "nope", *after, says="no thread 'nope'", code=EXIT_NOT_FOUND)] + [
        row(command, *before, bad, *after, says="is not a thread id") for bad in BAD_IDS
    ]


def text_rows(command: str, *after: str, what: str = "text") -> list[Row]:
    """Refused text for a command whose first argument is text."""
    return [row(command, bad, *after, says=f"the {what}") for bad in BAD_TEXTS]


def name_rows(command: str, *args: str) -> list[Row]:
    """Who acts is never a typed name; a token that is not live is refused."""
    return [row(command, *args, "--by", bad, says="--by no longer chooses who acts") for bad in BAD_NAMES[:3]] + [
        row(command, *args, says="SIGNOFF_USER no longer chooses who acts", SIGNOFF_USER="signoff (deadline)"),
        row(command, *args, says="SIGNOFF_TOKEN is not a live reviewer token", SIGNOFF_TOKEN="sgn_not-a-token"),
    ]


def start_rows(graph: str, what: str) -> list[Row]:
    cmd = f"start {graph}"
    return text_rows(cmd, what=what) + [
        *(row(cmd, "hello", "--thread", bad, says="is not a thread id") for bad in BAD_IDS if bad),
        row(cmd, "hello", "--thread", WAITING, says=f"thread {WAITING} already exists", code=EXIT_CONFLICT),
        *(row(cmd, "hello", "--deadline", bad, says="--deadline must be a positive number") for bad in BAD_NUMBERS),
        row(cmd, "hello", "--deadline", "abc", says="Invalid value for '--deadline'"),
        row(cmd, "hello", f"--{graph}-nope", says="No such option"),
        row(cmd, "hello", says=f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS must be a", **{f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS": "soon"}),
        *(row(cmd, "hello", says=f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS must be a positive number", **{f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS": bad})
          for bad in BAD_NUMBERS),
        *(row(cmd, "hello", says="SIGNOFF_GATE_DEADLINE_HOURS must be a positive number", SIGNOFF_GATE_DEADLINE_HOURS=bad) for bad in BAD_NUMBERS),
        *(row(cmd, "hello", says="SIGNOFF_CALL_TIMEOUT must be a positive number", SIGNOFF_CALL_TIMEOUT=bad) for bad in BAD_NUMBERS),
        row(cmd, "hello", says="SIGNOFF_MAX_ATTEMPTS must be a whole number", SIGNOFF_MAX_ATTEMPTS="2.5"),
        row(cmd, "hello", says="SIGNOFF_MAX_ATTEMPTS must be a positive number", SIGNOFF_MAX_ATTEMPTS="100"),
        row(cmd, "hello", says="SIGNOFF_MODEL must be 'local'", SIGNOFF_MODEL="gpt-4"),
        row(cmd, "hello", says="SIGNOFF_REVIEW_MODEL must be 'local'", SIGNOFF_REVIEW_MODEL="gpt-4"),
        row(cmd, "hello", says="SIGNOFF_REVIEW_MODEL: unknown local model '9b'", SIGNOFF_REVIEW_MODEL="local:9b"),
        row(cmd, "hello", says="SIGNOFF_REVIEW_MODEL is 'openai:' without a model name", SIGNOFF_REVIEW_MODEL="openai:"),
        row(cmd, "hello", says="hand-over playbook /nonexistent/handover.toml: no such file", SIGNOFF_HANDOVER_PLAYBOOK="/nonexistent/handover.toml"),
        row(cmd, "hello", says="not a readable TOML file", SIGNOFF_HANDOVER_PLAYBOOK=__file__),
        row(cmd, "hello", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u@127.0.0.1:1/x?password=secret"),
    ]


def out_rows(graph: str) -> list[Row]:
    """--out folders a thread could never publish to: refused at start, not after approval."""
    cmd = f"start {graph}"
    return [
        row(cmd, "hello", "--out", "{a_file}", says="is a file, not a folder"),
        row(cmd, "hello", "--out", "{a_file}/sub", says="cannot be created"),
        row(cmd, "hello", "--out", "/proc/signoff-out", says="cannot write to /proc/signoff-out"),
        row(cmd, "hello", "--out", "/" + "x" * 5000, says="--out"),
    ]


def path_rows(command: str) -> list[Row]:
    return [
        row(command, "/nonexistent/files", says="no such file or folder", code=EXIT_NOT_FOUND),
        row(command, "{a_file}", says="{a_file}"),
        row(command, "{nul_file}", says="contains NUL bytes"),
        row(command, "{leaky_dir}", says="outside"),
    ]


ROWS: list[Row] = [
    *start_rows("support", "message"),
    row("start support", "hello", "--email", NOT_UTF8, says="the email is not valid UTF-8"),
    row("start support", "hello", "--email", "", says="the email is empty"),
    *start_rows("revision", "text"),
    *out_rows("revision"),
    *start_rows("research", "text"),
    *out_rows("research"),
    row("pending", "--nope", says="No such option: --nope"),
    row("pending", says="SIGNOFF_CALL_TIMEOUT must be a", SIGNOFF_CALL_TIMEOUT="soon"),
    row("pending", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="host=127.0.0.1 port=1 password=secret dbname=x"),
    *(row("pending", "--limit", bad, says="--limit must be a whole number from 1 to") for bad in ("0", "-1", "100001")),
    *(row("pending", "--limit", bad, says="Invalid value for '--limit'") for bad in ("many", "nan", "1e308", "2.5")),
    *(row("pending", "--older-than", bad, says="--older-than must be a duration like") for bad in
      ("soon", "2", "0h", "-1h", "nan", "infd", "99999d", "", "2h\n", "1e400d", NOT_UTF8, "2h\x1b[2J")),
    row("pending", "--graph", "Bad Graph!", says="is not a graph name"),
    row("pending", "--graph", "nope", says="there is no graph 'nope'"),
    *id_rows("show"),
    row("show", says="Missing argument"),
    *id_rows("approve", after=ANY_DIGEST),
    row("approve", WAITING, says="approve needs --expect DIGEST when not run at a terminal"),
    row("approve", WAITING, "--yes", says="approve needs --expect DIGEST when not run at a terminal"),
    row("approve", FINISHED, *ANY_DIGEST, says=f"thread {FINISHED} is not waiting at a gate", code=EXIT_CONFLICT),
    row("approve", WAITING, *ANY_DIGEST, says="no such digest '000000000000' for thread waiting-1"),
    *(row("approve", WAITING, *ANY_DIGEST, "--note", bad, says="the note") for bad in BAD_TEXTS if bad),
    *name_rows("approve", WAITING, *ANY_DIGEST),
    row("approve", WAITING, "extra", says="unexpected extra argument"),
    *id_rows("reject", "--feedback", "shorter"),
    row("reject", WAITING, says="reject needs --feedback TEXT (what to change: the model redrafts) or, for support, --hand-over"),
    *(row("reject", WAITING, "--hand-over", "--feedback", bad, says="the feedback") for bad in BAD_TEXTS),
    *(row("reject", WAITING, "--feedback", bad, says="the feedback") for bad in BAD_TEXTS),
    *name_rows("reject", WAITING, "--feedback", "shorter"),
    row("reject", FINISHED, "--feedback", "shorter", says=f"thread {FINISHED} is not waiting at a gate", code=EXIT_CONFLICT),
    row("reject", WAITING, "--feedback", "shorter", "--expect", "x", says="no such digest for thread waiting-1"),
    *id_rows("resume"),
    row("resume", WAITING, says=f"thread {WAITING} is waiting at gate review: approve or reject it", code=EXIT_CONFLICT),
    row("recover", "--nope", says="No such option: --nope"),
    row("expire", "--nope", says="No such option: --nope"),
    row("worker", "--concurrency", "0", says="Invalid value for '--concurrency'"),
    row("worker", "--concurrency", "many", says="Invalid value for '--concurrency'"),
    row("worker", says="SIGNOFF_MODEL_CONCURRENCY must be a whole number", SIGNOFF_MODEL_CONCURRENCY="lots"),
    row("worker", says="SIGNOFF_MODEL_CONCURRENCY must be a positive number", SIGNOFF_MODEL_CONCURRENCY="-3"),
    row("worker", says="SIGNOFF_MODEL_CONCURRENCY must be a whole number", SIGNOFF_MODEL_CONCURRENCY="2.5"),
    row("worker", says="SIGNOFF_PRUNE_AFTER_DAYS must be a positive number", SIGNOFF_PRUNE_AFTER_DAYS="0"),
    row("worker", says="SIGNOFF_PRUNE_AFTER_DAYS must be a number", SIGNOFF_PRUNE_AFTER_DAYS="weekly"),
    row("worker", says="SIGNOFF_REVIEW_MODEL must be 'local'", SIGNOFF_REVIEW_MODEL="gpt-4"),
    row("worker", says="hand-over playbook /nonexistent/handover.toml: no such file", SIGNOFF_HANDOVER_PLAYBOOK="/nonexistent/handover.toml"),
    row("worker", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("workers", "--nope", says="No such option: --nope"),
    row("workers", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("worker", "--metrics-port", "0", says="Invalid value for '--metrics-port'"),
    row("worker", says="SIGNOFF_LOG_FORMAT must be text or json", SIGNOFF_LOG_FORMAT="xml"),
    row("stats", "--since", "forever", says="--since must be a duration like 30m"),
    row("stats", says="SIGNOFF_MODEL_PRICES must be JSON", SIGNOFF_MODEL_PRICES="cheap"),
    row("show", WAITING, says="SIGNOFF_MODEL_PRICES must be JSON", SIGNOFF_MODEL_PRICES="cheap"),
    row("serve", says="SIGNOFF_MODEL_PRICES must be JSON", SIGNOFF_MODEL_PRICES="cheap"),
    row("serve", "--port", "0", says="Invalid value for '--port'"),
    row("serve", "--port", "http", says="Invalid value for '--port'"),
    row("serve", "--host", "a b", says="--host must be an address"),
    row("serve", "--host", "", says="--host must be an address"),
    row("serve", says="SIGNOFF_SECRET_KEY must be at least 32 characters", SIGNOFF_SECRET_KEY="short"),
    row("serve", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    *(row("token create", bad, says="reviewer name") for bad in BAD_NAMES),
    row("token create", "", says="reviewer name"),
    row("token create", says="Missing argument"),
    row("token create", "alice", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("token revoke", "nobody", says="no live token for 'nobody'", code=EXIT_NOT_FOUND),
    *(row("token revoke", bad, says="reviewer name") for bad in BAD_NAMES),
    row("token list", "--nope", says="No such option: --nope"),
    *id_rows("watch"),
    row("watch", says="Missing argument"),
    *id_rows("audit"),
    row("config", "--nope", says="No such option: --nope"),
    row("config", says="SIGNOFF_MAX_ATTEMPTS must be a whole number", SIGNOFF_MAX_ATTEMPTS="many"),
    *(row("config", says="SIGNOFF_CALL_TIMEOUT must be a positive number", SIGNOFF_CALL_TIMEOUT=bad) for bad in BAD_NUMBERS),
    row("db migrate", "--nope", says="No such option: --nope"),
    row("db migrate", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("db status", "--nope", says="No such option: --nope"),
    row("db prune", "--nope", says="No such option: --nope"),
    *(row("db prune", "--finished-older-than", bad, says="--finished-older-than must be a number of days") for bad in BAD_NUMBERS if bad != "0"),
    row("db prune", "--finished-older-than", "a week", says="Invalid value for '--finished-older-than'"),
    row("db prune", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    *path_rows("kb load"),
    *text_rows("kb search", what="query"),
    row("model status", "--nope", says="No such option: --nope"),
    row("model stop", "--nope", says="No such option: --nope"),
    *path_rows("corpus add"),
    row("corpus list", "--nope", says="No such option: --nope"),
    row("orders load", "/nonexistent/orders.csv", says="no such file", code=EXIT_NOT_FOUND),
    row("orders load", "{a_file}", says="the first line must be the header"),
    row("orders load", "{nul_file}", says="contains NUL bytes"),
    row("orders load", "{leaky_dir}", says="is a folder"),
    row("orders load", "--nope", says="No such option: --nope"),
    row("orders list", "--nope", says="No such option: --nope"),
    row("policy load", "/nonexistent/signoff.toml", says="no such file", code=EXIT_NOT_FOUND),
    row("policy load", "{a_file}", says="not valid TOML"),
    row("policy load", "{nul_file}", says="contains NUL bytes"),
    row("policy load", "{leaky_dir}", says="is a folder"),
    row("policy load", says="Missing argument"),
    row("policy show", "--nope", says="No such option: --nope"),
    row("policy history", "--nope", says="No such option: --nope"),
    row("policy show", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("approve", WAITING, "--edit", says="the editor exited with code 1", code=EXIT_CONFLICT, EDITOR="false"),
    row("approve", WAITING, "--edit", says="cannot run the editor", EDITOR="/nonexistent/editor"),
    row("approve", WAITING, "--edit", says="cannot be parsed", EDITOR="'unbalanced"),
    row("approve", WAITING, "--edit", *ANY_DIGEST, says="no such digest '000000000000'", EDITOR="true"),
    row("approve", FINISHED, "--edit", says=f"thread {FINISHED} is not waiting at a gate", code=EXIT_CONFLICT, EDITOR="true"),
    row("orders list", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("start graph", "--input", "{}", says="name the graph: signoff start GRAPH --input JSON"),
    row("start nope", "--input", "{}", says="graph 'nope' is not here", code=EXIT_NOT_FOUND),
    row("start support", "--input", "{}", says="No such option: --input"),
    row("start nope", says="Missing option '--input'"),
    row("start Bad!", "--input", "{}", says="is not a graph name"),
    *id_rows("answer", after=("--value", "1", *ANY_DIGEST)),
    row("answer", WAITING, "--value", "{bad", *ANY_DIGEST, says="--value is not JSON"),
    row("answer", WAITING, "--value", "1", says="needs --expect DIGEST when not run at a terminal"),
    row("answer", WAITING, "--value", "1", *ANY_DIGEST, says="whose gate asks no interrupt"),
    row("approve", WAITING, "--args", "{}", *ANY_DIGEST, says="whose gate asks no interrupt"),
    row("reject", WAITING, "--ignore", says="whose gate asks no interrupt"),
    row("graphs check", "--nope", says="No such option: --nope"),
    row("graphs check", says="cannot reach PostgreSQL", code=EXIT_UNAVAILABLE, DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x"),
    row("graphs", "--nope", says="No such option: --nope"),
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
        server.rule("technical support agent", ok(CANNOT_ANSWER))
        yield server


@pytest.fixture(scope="module")
def env(module_db: str, module_server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("bad-input")
    (home / "a-file").write_text("not a folder\n")
    (home / "nul.md").write_bytes(b"---\ntitle: T\ncategory: billing\n---\nbody\x00\n")
    outside = home / "outside.md"
    outside.write_text("---\ntitle: Secret\ncategory: billing\n---\nnot for the corpus\n")
    (home / "leaky").mkdir()
    (home / "leaky" / "link.md").symlink_to(outside)
    environment = {
        "DATABASE_URL": module_db, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:test-model",
        "OPENAI_BASE_URL": module_server.base_url, "OPENAI_API_KEY": "test-key",
    }
    runner = CliRunner()
    for args in (["start", "support", "The app crashes", "--thread", WAITING],
                 ["start", "support", "The app crashes", "--thread", FINISHED], ["approve", FINISHED, "--expect", "{digest}"],
                 ["kb", "load"], ["corpus", "add"]):
        args = [review_digest(module_db, FINISHED) if a == "{digest}" else a for a in args]
        result = runner.invoke(app, args, env=environment)
        assert result.exit_code == 0, result.output
    return environment


def file_tree(root: Path) -> dict[str, int]:
    """Every file under root with its size (the embedded database's own files excluded)."""
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*") if "pgdata" not in p.parts}


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(case: Row, env: dict[str, str], module_db: str):
    home = Path(env["SIGNOFF_HOME"])
    places = {"{a_file}": str(home / "a-file"), "{nul_file}": str(home / "nul.md"), "{leaky_dir}": str(home / "leaky")}

    def fill(text: str) -> str:
        for key, value in places.items():
            text = text.replace(key, value)
        return text

    args = [*case.command.split(), *(fill(a) for a in case.args)]
    before, files = table_counts(module_db), file_tree(home)
    result = CliRunner().invoke(app, args, env={**env, **case.env})
    assert result.exit_code == case.code, (result.exit_code, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and fill(case.says) in lines[0], lines[0]
    assert "Traceback" not in result.output and "secret" not in result.output
    assert "\x1b" not in result.output and "\x00" not in result.output, "hostile input is echoed only made visible"
    assert table_counts(module_db) == before
    assert file_tree(home) == files


def test_invalid_utf8_bytes_in_argv_are_one_line_nonzero_and_change_no_rows(env: dict[str, str], module_db: str):
    """The real thing: bytes that are not UTF-8 on a real process's command line."""
    before = table_counts(module_db)
    proc = spawn_cli([b"start", b"support", b"caf\xe9 \xff\xfe"], env)  # type: ignore[list-item]
    assert proc.wait() != 0, proc.output
    assert proc.out == [] and len(proc.err) == 1, proc.output
    assert proc.err[0] == "error: the message is not valid UTF-8: pass plain text"
    assert table_counts(module_db) == before
