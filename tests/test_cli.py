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


def test_approve_with_a_stale_digest_is_refused(cli, server, pool):
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    tid = thread_id_from(cli("start", "support", "I was charged twice this month").output)
    result = cli("approve", tid, "--expect", "000000000000")
    assert result.exit_code != 0 and "content changed" in result.output
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
