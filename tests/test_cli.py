"""The `signoff` command, through typer's CliRunner and through real processes.

Models are real ChatOpenAI clients talking to the test's OpenAI-compatible server, so the
CLI runs exactly the code path production runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import count_rows, expect
from checkpoint.identity import os_user
from tests.fault_server import ok
from tests.scripted import ANSWERED, CANNOT_ANSWER

BILLING_ANSWER = "A second charge is usually a pending authorization that drops off within 3-5 business days."



def thread_id_from(output: str) -> str:
    match = re.search(r"^thread (\S+)", output, re.M)
    assert match, output
    return match.group(1)


def test_start_support_streams_progress_and_stops_at_review(cli, server):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    result = cli("start", "support", "I was charged twice this month", "--email", "a@example.com")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("thread support-"), "the thread id comes first"
    for node in ("classify", "billing_agent", "draft_reply"):
        assert re.search(rf"✓ {node}\s", result.output), node
    assert "model=openai:test-model" in result.output
    assert "pending authorization" in result.output, "the agent's tokens are streamed"
    assert "waiting at gate review" in result.output
    tid = thread_id_from(result.output)
    assert f"signoff approve {tid}" in result.output
    assert f"signoff reject {tid}" in result.output
    assert f"signoff reject {tid} --hand-over" in result.output, "a support thread can go to a specialist"


def test_pending_lists_the_waiting_thread(cli, server):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("pending")
    assert result.exit_code == 0
    assert tid in result.output and "review" in result.output and "charged twice" in result.output


def test_show_prints_the_draft_and_its_digest(cli, server):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("show", tid)
    assert result.exit_code == 0
    assert "awaiting sign-off" in result.output and "pending authorization" in result.output
    assert re.search(r"digest [0-9a-f]{12}", result.output)


def test_approve_finishes_the_thread_with_one_outbox_row(cli, server, pool, database_url):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("approve", tid, "--note", "looks right", *expect(database_url, tid))
    assert result.exit_code == 0, result.output
    assert "finished" in result.output and "replied" in result.output
    assert count_rows(pool, "outbox", thread_id=tid) == 1
    assert count_rows(pool, "approvals", thread_id=tid, actor=os_user(), note="looks right") == 1


def test_reject_redrafts_with_the_feedback_and_waits_again(cli, server):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER), ok("We are sorry: that charge will drop off."))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("reject", tid, "--feedback", "apologise first")
    assert result.exit_code == 0, result.output
    assert "waiting at gate review" in result.output
    assert "apologise first" in str(server.requests[-1]["messages"])


def test_reject_hand_over_sends_the_holding_reply_and_opens_a_ticket(cli, server, pool):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    requests = len(server.requests)
    result = cli("reject", tid, "--hand-over")
    assert result.exit_code == 0, result.output
    assert "handed over" in result.output and "holding" in result.output
    assert len(server.requests) == requests, "no redraft"
    assert count_rows(pool, "tickets", thread_id=tid, status="open") == 1
    assert count_rows(pool, "outbox", thread_id=tid, kind="holding") == 1
    assert count_rows(pool, "approvals", thread_id=tid, handover=True, note="handed over to a specialist") == 1


def test_approving_twice_says_the_thread_is_not_waiting(cli, server, pool, database_url):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    digest = expect(database_url, tid)
    assert cli("approve", tid, *digest).exit_code == 0
    again = cli("approve", tid, *digest)
    assert again.exit_code != 0
    assert "not waiting at a gate" in again.output
    assert count_rows(pool, "outbox", thread_id=tid) == 1


def test_approve_with_a_digest_the_thread_never_had_is_refused_as_no_such_digest(cli, server, pool):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("approve", tid, "--expect", "000000000000")
    assert result.exit_code == 2 and f"no such digest '000000000000' for thread {tid}" in result.output
    assert "content changed" not in result.output
    assert count_rows(pool, "approvals") == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("start", "support", "   "), "message is empty"),
        (("start", "support", "x" * 70_000), "over the 65536-byte limit"),
        (("start", "support", "hi", "--thread", "bad id!"), "is not a thread id"),
        (("show", "nope"), "no thread 'nope'"),
        (("approve", "nope", "--expect", "0"), "no thread 'nope'"),
        (("reject", "nope", "--feedback", "x"), "no thread 'nope'"),
        (("reject", "nope", "--feedback", " "), "feedback is empty"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(cli, pool, args, message):
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert count_rows(pool, "threads") == 0 and count_rows(pool, "approvals") == 0


def test_a_missing_api_key_is_reported_before_anything_is_written(cli, env, pool):
    result = CliRunner().invoke(app, ["start", "support", "hello"], env={**env, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert result.exit_code != 0
    assert "needs OPENAI_API_KEY" in result.output
    assert count_rows(pool, "threads") == 0


def test_an_unreachable_database_is_one_clear_line(env):
    result = CliRunner().invoke(app, ["pending"], env={**env, "DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/x"})
    assert result.exit_code != 0
    assert "cannot reach PostgreSQL" in result.output and "secret" not in result.output


def test_db_migrate_twice_is_up_to_date(cli):
    cli("db", "migrate")
    result = cli("db", "migrate")
    assert result.exit_code == 0 and "up to date" in result.output
    assert "001_core  applied" in cli("db", "status").output


def test_kb_load_is_idempotent_and_search_finds_articles(cli):
    first = cli("kb", "load")
    assert first.exit_code == 0 and "0 unchanged" in first.output
    assert re.search(r"^0 loaded, \d+ unchanged", cli("kb", "load").output, re.M)
    assert "billing-double-charge" in cli("kb", "search", "charged twice").output


def test_a_thread_started_in_one_process_is_approved_from_another(env, server, pool):
    server.script(ok('{"intent": "technical"}'), ok(CANNOT_ANSWER))
    proc_env = {**os.environ, **env}
    started = subprocess.run([sys.executable, "-m", "cli", "start", "support", "The app crashes on start"],
                             env=proc_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    tid = thread_id_from(started.stdout)
    assert "waiting at gate review" in started.stdout
    approved = subprocess.run([sys.executable, "-m", "cli", "approve", tid, *expect(env["DATABASE_URL"], tid)],
                              env=proc_env, capture_output=True, text=True, timeout=120)
    assert approved.returncode == 0, approved.stderr
    assert "finished" in approved.stdout
    assert count_rows(pool, "outbox", thread_id=tid) == 1
    assert count_rows(pool, "tickets", thread_id=tid) == 1


#: Credentials planted in every form a variable can carry one; none may reach `config`'s output.
PLANTED_SECRETS = {
    "OPENAI_BASE_URL": "http://user:hunter2pass@llm.example/v1?api_key=sk-live-123",
    "OPENAI_API_KEY": "sk-openai-key-777",
    "DATABASE_URL": "postgresql://signoff:db-pass-31@db.example/signoff?sslmode=require",
    "SIGNOFF_PAYMENTS_URL": "https://pay:pay-pass-42@pay.example/v2?token=pay-token-43",
    "SIGNOFF_PAYMENTS_KEY": "pay-bearer-44",
    "SIGNOFF_SECRET_KEY": "s" * 20 + "secret-key-45" + "s" * 10,
    "SIGNOFF_NOTIFY_WEBHOOK": "https://hooks.example/in/hook-path-46?sig=hook-sig-47",
    "SIGNOFF_NOTIFY_WEBHOOK_SECRET": "hook-secret-48",
    "SIGNOFF_NOTIFY_SLACK": "https://hooks.slack.com/services/T000/B000/slack-path-49",
    "SIGNOFF_NOTIFY_SMTP": "smtp://mailer:smtp-pass-50@mail.example:587?from=signoff@example.com&to=lead@example.com&starttls=1",
    "SIGNOFF_TOKEN": "sgn_cli-token-51",
}
SECRET_PARTS = ("hunter2pass", "sk-live-123", "sk-openai-key-777", "db-pass-31", "pay-pass-42", "pay-token-43", "pay-bearer-44",
                "secret-key-45", "hook-path-46", "hook-sig-47", "hook-secret-48", "slack-path-49", "smtp-pass-50", "cli-token-51")


def documented_variables() -> set[str]:
    """Every variable the configuration table of docs/configuration.md names (`_WEBHOOK_SECRET`
    after `SIGNOFF_NOTIFY_WEBHOOK` is SIGNOFF_NOTIFY_WEBHOOK_SECRET)."""
    from tests.procs import ROOT

    section = (ROOT / "docs" / "configuration.md").read_text()
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first, *rest = re.findall(r"`(_?[A-Z][A-Z0-9_<>]*)`", line.split("|")[1])
        names.add(first)
        names.update(first.rsplit("_", 1)[0] + part if part.startswith("_") else part for part in rest)
        names.update(re.findall(r"`((?:SIGNOFF|OPENAI)_[A-Z0-9_<>]+)`", line))
    return names


def test_config_hides_every_credential_and_lists_every_variable_the_configuration_document_names(tmp_path):
    import json

    env = {"SIGNOFF_HOME": str(tmp_path), "SIGNOFF_MODEL": "openai:test-model", **PLANTED_SECRETS}
    table = CliRunner().invoke(app, ["config"], env=env)
    as_json = CliRunner().invoke(app, ["config", "--json"], env=env)
    assert table.exit_code == 0 and as_json.exit_code == 0, table.output + as_json.output
    for output in (table.output, as_json.output):
        assert [part for part in SECRET_PARTS if part in output] == []
    listed = {row["variable"]: row["value"] for row in json.loads(as_json.output)["settings"]}
    documented = documented_variables()
    assert len(documented) > 20 and documented - set(listed) == set()
    assert listed["SIGNOFF_SECRET_KEY"] == "set (hidden)" and listed["SIGNOFF_PAYMENTS_KEY"] == "set (hidden)"
    assert listed["OPENAI_BASE_URL"] == "http://user:***@llm.example/v1?api_key=***"
    assert listed["SIGNOFF_NOTIFY_SMTP"].startswith("smtp://mailer:***@mail.example:587?from=signoff@example.com")
    unset = json.loads(CliRunner().invoke(app, ["config", "--json"], env={"SIGNOFF_HOME": str(tmp_path)}).output)["settings"]
    assert {row["variable"]: row["value"] for row in unset}["SIGNOFF_SECRET_KEY"].startswith("(unset")


@pytest.mark.parametrize("absent", [("python_multipart", "multipart"), ("uvicorn",)])
def test_serve_without_the_web_extra_refuses_to_start_in_one_line_naming_the_extra(env, tmp_path, absent):
    """The missing packages are shadowed by ones that fail to import, as an uninstalled one does."""
    from tests.procs import ROOT, process_env

    for name in absent:
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named {name}\", name={name!r})\n")
    shadowed = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "cli", "serve", "--port", "1"], cwd=ROOT, env=process_env(shadowed),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert 'pip install -e ".[web]"' in result.stderr and "Traceback" not in result.stderr
