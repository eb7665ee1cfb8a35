"""`--json` on every command that reads: one JSON document on stdout with the field
names of docs/json-output.md, untrusted text inert on a terminal yet exact for a parser, errors as one
`{"error": ...}` line on stderr with the same exit codes, and nothing stored changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from checkpoint.errors import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE
from cli import app
from checkpoint.identity import os_user
from tests.conftest import expect
from tests.procs import ROOT, process_env, table_counts

HOSTILE = "Refund me \x1b[2J\x1b]8;;http://evil\x07now\u202e\nfake-1  support  review"

#: The field names of docs/json-output.md, per command: a change here is a change to a documented contract.
FIELDS = {
    ("pending",): {"total", "limit", "threads"},
    ("show", "w1"): {"thread_id", "graph", "status", "gate", "summary", "deadline", "digest", "review", "error",
                     "created_at", "updated_at", "steps", "tokens", "decisions", "stage"},
    ("audit", "w1"): {"thread_id", "events"},
    ("config",): {"settings"},
    ("db", "status"): {"migrations"},
    ("model", "status"): {"running", "pid", "base_url", "model", "weights", "started_at"},
    ("kb", "search", "app crashes"): {"query", "hits"},
    ("corpus", "list"): {"documents"},
    ("stats",): {"since", "period_seconds", "threads", "gate_waits", "decisions", "failures", "tokens"},
}
PENDING_THREAD = {"thread_id", "graph", "gate", "waiting_since", "age_seconds", "deadline", "overdue", "digest", "summary",
                  "waiting_for", "stage"}  # the approval stage it waits for (words, fields), or null


@pytest.fixture
def server(escalating_server):
    return escalating_server


@pytest.fixture
def threads(cli, database_url):
    """A thread waiting at its gate (hostile message) and a finished one, a loaded kb and corpus."""
    assert cli("start", "support", HOSTILE, "--thread", "w1").exit_code == 0
    assert cli("start", "support", "The app crashes", "--thread", "f1").exit_code == 0
    assert cli("approve", "f1", *expect(database_url, "f1")).exit_code == 0
    assert cli("kb", "load").exit_code == 0 and cli("corpus", "add").exit_code == 0


def read_commands() -> list[str]:
    """Every command with a --json option (so a new read command is held to these tests)."""
    found = []

    def walk(command, prefix: str) -> None:
        for name, child in (getattr(command, "commands", None) or {}).items():
            walk(child, f"{prefix} {name}".strip())
        if not getattr(command, "commands", None) and any("--json" in p.opts for p in command.params):
            found.append(prefix)

    walk(typer.main.get_command(app), "")
    return sorted(found)


def test_every_read_command_takes_json():
    assert set(read_commands()) >= {"pending", "show", "audit", "config", "db status", "model status", "kb search", "corpus list"}


@pytest.mark.parametrize("args", list(FIELDS), ids=[" ".join(a) for a in FIELDS])
def test_each_read_command_prints_one_json_document_with_its_fields_and_writes_nothing(args, cli, threads, database_url):
    before = table_counts(database_url)
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1 and result.stdout.isascii(), "one line of ASCII JSON"
    document = json.loads(result.stdout)
    assert set(document) == FIELDS[args]
    assert table_counts(database_url) == before


def test_pending_and_show_carry_the_exact_untrusted_text_inert(cli, threads, database_url):
    pending = cli("pending", "--json")
    assert "\x1b" not in pending.stdout and "\u202e" not in pending.stdout
    listed = json.loads(pending.stdout)
    assert listed["total"] == 1 and listed["limit"] == 100
    (row,) = listed["threads"]
    assert set(row) == PENDING_THREAD
    assert row["thread_id"] == "w1" and row["gate"] == "review" and row["overdue"] is False
    assert HOSTILE in row["summary"], "the parser gets the original text back"
    digest = expect(database_url, "w1")[1]
    assert row["digest"] == digest

    shown = json.loads(cli("show", "w1", "--json").stdout)
    assert shown["digest"] == digest and shown["status"] == "waiting" and shown["gate"] == "review"
    assert shown["review"] and [s["node"] for s in shown["steps"]][:1] == ["classify"]
    finished = json.loads(cli("show", "f1", "--json").stdout)
    assert finished["status"] == "finished" and finished["gate"] is None and finished["digest"] is None
    assert [(d["decision"], d["actor"]) for d in finished["decisions"]] == [("approved", os_user())]
    events = json.loads(cli("audit", "f1", "--json").stdout)["events"]
    assert "decision_approved" in [e["kind"] for e in events] and all(set(e) == {"at", "actor", "kind", "detail"} for e in events)


@pytest.mark.parametrize("args, code, says", [
    (("show", "nope"), EXIT_NOT_FOUND, "no thread 'nope'"),
    (("audit", "nope"), EXIT_NOT_FOUND, "no thread 'nope'"),
    (("show", "bad id!"), EXIT_USAGE, "is not a thread id"),
    (("pending", "--limit", "0"), EXIT_USAGE, "--limit must be a whole number"),
    (("pending", "--limit", "many"), EXIT_USAGE, "Invalid value for '--limit'"),
    (("pending", "--older-than", "soon"), EXIT_USAGE, "--older-than must be a duration"),
    (("pending", "--nope"), EXIT_USAGE, "No such option: --nope"),
    (("kb", "search", ""), EXIT_USAGE, "the query is empty"),
    (("config",), EXIT_USAGE, "SIGNOFF_MAX_ATTEMPTS"),
    (("pending",), EXIT_UNAVAILABLE, "cannot reach PostgreSQL"),
    (("db", "status"), EXIT_UNAVAILABLE, "cannot reach PostgreSQL"),
    (("db", "prune"), EXIT_UNAVAILABLE, "cannot reach PostgreSQL"),
])
def test_errors_are_one_json_line_on_stderr_with_the_exit_code_of_their_kind(args, code, says, cli, env, database_url):
    from typer.testing import CliRunner

    overrides = {}
    if code == EXIT_UNAVAILABLE:
        overrides["DATABASE_URL"] = "postgresql://u:secret@127.0.0.1:1/x"
    if args == ("config",):
        overrides["SIGNOFF_MAX_ATTEMPTS"] = "many"
    result = CliRunner().invoke(app, [*args, "--json"], env={**env, **overrides})
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    error = json.loads(lines[0])
    assert set(error) == {"error", "exit_code"} and error["exit_code"] == code and says in error["error"]
    assert "Traceback" not in result.output and "secret" not in result.output


def test_pending_json_pipes_into_a_json_parser(cli, threads, env):
    """What a script does with it, as a shell runs it: `signoff pending --json | python -c 'json.load(sys.stdin)'`."""
    parser = f"{sys.executable} -c 'import json,sys; d = json.load(sys.stdin); print(d[\"total\"], d[\"threads\"][0][\"thread_id\"])'"
    piped = subprocess.run(f"{sys.executable} -m cli pending --json | {parser}", shell=True, cwd=ROOT,
                           env=process_env(env), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.split() == ["1", "w1"]
