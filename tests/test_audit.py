"""`signoff audit THREAD`: every decision, expiry, retry, fallback and side effect, with time
and actor, from a real run against the fault-injecting model server."""

from __future__ import annotations

import re

import pytest

from runtime.thread_runner import EXPIRY_ACTOR
from checkpoint.identity import os_user
from tests.conftest import expect
from tests.fault_server import ok, status

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def server(escalating_server):
    return escalating_server


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "SIGNOFF_FALLBACK_MODEL": "openai:other-model"}


def events(output: str) -> list[tuple[str, str, str]]:
    """(actor, event, detail) for each audit line, after checking it starts with a time."""
    rows = []
    for line in output.splitlines()[1:]:
        match = re.match(rf"^({TIME})\s+(.+?)\s+(\w+)\s+(\{{.*)$", line)
        assert match, f"not an audit line: {line!r}"
        rows.append((match[2], match[3], match[4]))
    return rows


def test_audit_lists_start_retries_fallbacks_side_effects_and_decisions_with_time_and_actor(cli, server, database_url, reviewer):
    server.script(status(500, retry_after=0))  # classify: one transient failure, then the rule answers
    server.once("technical support agent", status(401))  # the primary is refused: the fallback answers
    started = cli("start", "support", "The sync engine corrupts my notes", "--thread", "a1")
    assert started.exit_code == 0, started.output
    assert reviewer("alice")("approve", "a1", "--note", "ok to send", *expect(database_url, "a1")).exit_code == 0

    result = cli("audit", "a1")
    assert result.exit_code == 0, result.output
    rows = events(result.output)
    kinds = [kind for _, kind, _ in rows]
    assert kinds == ["thread_started", "retry", "fallback", "ticket_opened", "decision_approved", "reply_sent"], result.output
    by_kind = {kind: (who, detail) for who, kind, detail in rows}
    assert by_kind["thread_started"][0] == os_user()
    assert by_kind["retry"][0] == "signoff" and "HTTP 500" in by_kind["retry"][1] and '"node": "classify"' in by_kind["retry"][1]
    assert by_kind["fallback"][0] == "signoff" and "openai:other-model" in by_kind["fallback"][1] and "HTTP 401" in by_kind["fallback"][1]
    assert '"ticket_id"' in by_kind["ticket_opened"][1]
    assert by_kind["decision_approved"][0] == "alice" and "ok to send" in by_kind["decision_approved"][1]
    assert '"kind": "reply"' in by_kind["reply_sent"][1]


def test_audit_shows_an_expiry_and_its_holding_reply(cli, pool):
    assert cli("start", "support", "The sync engine corrupts my notes", "--thread", "a2").exit_code == 0
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET deadline = now() - interval '1 minute' WHERE thread_id = 'a2'")
    assert cli("expire").exit_code == 0
    rows = events(cli("audit", "a2").output)
    assert (EXPIRY_ACTOR, "decision_expired") in [(who, kind) for who, kind, _ in rows]
    assert [kind for _, kind, _ in rows][-1] == "reply_sent" and '"kind": "holding"' in rows[-1][2]


def test_audit_of_a_rejection_names_the_reviewer_and_the_feedback(cli, server, reviewer):
    server.rule("Rewrite the support reply", ok("We are on it: a specialist will reply today."))
    assert cli("start", "support", "The sync engine corrupts my notes", "--thread", "a3").exit_code == 0
    assert reviewer("bob")("reject", "a3", "--feedback", "promise a time").exit_code == 0
    rows = events(cli("audit", "a3").output)
    assert [(who, detail) for who, kind, detail in rows if kind == "decision_rejected"][0][0] == "bob"
    assert "promise a time" in [detail for _, kind, detail in rows if kind == "decision_rejected"][0]


def test_audit_of_an_unknown_thread_is_one_line_and_nonzero(cli):
    result = cli("audit", "nope")
    assert result.exit_code != 0 and result.output.strip() == "error: no thread 'nope': list threads with `signoff pending`"
