"""Every gate has a deadline; past it the gate's default action applies, audited as "expired".

Time is injected (SignoffContext(clock=...)); no test sleeps. Where a CLI command must meet an
expired gate, the test moves the thread's deadline into the past in the database, which is
exactly what the passing of time would have done.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkpoint import threads
from cli import app
from graphs.registry import GRAPHS, RESEARCH, REVISION, SUPPORT, GraphSpec
from runtime.thread_runner import EXPIRY_ACTOR, ThreadRunner, expire_due
from graphs.support import HOLDING_REPLY
from tests.conftest import count_rows, expect
from tests.procs import table_counts
from tests.fault_server import FaultServer, ok
from tests.scripted import ANSWERED, CANNOT_ANSWER, REPLY, REVIEWER, WRITER, scripted_registry

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

TECHNICAL = [("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER)]
BILLING = [("Classify the customer message", '{"intent": "billing"}'), ("billing support agent", ANSWERED), (REPLY, "A second charge is a pending authorization.")]
WRITING = [(REVIEWER, '{"score": 0.9, "feedback": "Fine."}'), (WRITER, "# Durable work\n\nCheckpoints keep it.")]
RESEARCHING = [
    ("Split the research topic", json.dumps({"subtasks": ["What does a checkpoint contain?", "How do idempotency keys work?", "How do approval deadlines work?"]})),
    ("Summarise what the passages say", "Saved state, keys and deadlines."),
    *WRITING,
]


def clock_at(moment: datetime):
    return lambda: moment


@pytest.fixture
def runner_at(pool, make_context):
    """A ThreadRunner for `spec` whose clock reads `moment`."""

    def make(spec: GraphSpec, rules, moment: datetime = NOW) -> ThreadRunner:
        return ThreadRunner(pool, spec, make_context(scripted_registry(rules), clock=clock_at(moment)))

    return make


def audit_kinds(pool, tid: str) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        return [(r["kind"], r["actor"]) for r in conn.execute("SELECT kind, actor FROM audit_events WHERE thread_id = %s ORDER BY id", (tid,))]


# --- runner level, injected clock ----------------------------------------------------------


def test_a_gate_waits_24_hours_by_default(runner_at, pool):
    stop = runner_at(SUPPORT, TECHNICAL).start("d1", "The app crashes on start", {}, lambda e: None)
    assert stop.status == "waiting"
    assert threads.get(pool, "d1").deadline == NOW + timedelta(hours=24)


def test_nothing_expires_before_the_deadline(runner_at, pool, make_context):
    runner_at(SUPPORT, TECHNICAL).start("d2", "The app crashes on start", {}, lambda e: None)
    early = make_context(scripted_registry(TECHNICAL), clock=clock_at(NOW + timedelta(hours=23, minutes=59)))
    assert expire_due(pool, early, lambda e: None) == []
    assert threads.get(pool, "d2").status == "waiting"
    assert count_rows(pool, "approvals") == 0 and count_rows(pool, "outbox") == 0


def test_an_expired_support_gate_sends_the_holding_reply_keeps_the_ticket_open_and_is_audited(runner_at, pool, make_context):
    runner_at(SUPPORT, TECHNICAL).start("d3", "The app crashes on start", {}, lambda e: None)
    late = make_context(scripted_registry(TECHNICAL), clock=clock_at(NOW + timedelta(hours=24, seconds=1)))
    stops = expire_due(pool, late, lambda e: None)
    assert [(s.thread_id, s.status) for s in stops] == [("d3", "finished")]
    assert stops[0].values["outcome"] == "holding" and stops[0].values["reply"] == HOLDING_REPLY
    assert count_rows(pool, "outbox", thread_id="d3", kind="holding") == 1
    assert count_rows(pool, "tickets", thread_id="d3", status="open") == 1, "the ticket stays open for a person"
    assert count_rows(pool, "approvals", thread_id="d3", decision="expired", actor=EXPIRY_ACTOR) == 1
    assert ("decision_expired", EXPIRY_ACTOR) in audit_kinds(pool, "d3")
    assert expire_due(pool, late, lambda e: None) == [], "expiring twice does nothing"
    assert count_rows(pool, "outbox", thread_id="d3") == 1


def test_an_expired_answer_without_a_ticket_opens_one_for_the_holding_reply(runner_at, pool, make_context):
    runner_at(SUPPORT, BILLING).start("d4", "I was charged twice this month", {}, lambda e: None)
    assert count_rows(pool, "tickets", thread_id="d4") == 0
    expire_due(pool, make_context(scripted_registry(BILLING), clock=clock_at(NOW + timedelta(days=2))), lambda e: None)
    assert count_rows(pool, "tickets", thread_id="d4", status="open") == 1
    assert count_rows(pool, "outbox", thread_id="d4", kind="holding") == 1


def test_the_deadline_option_sets_the_deadline_that_many_hours_from_now(runner_at, pool):
    runner_at(SUPPORT, TECHNICAL).start("d5", "The app crashes on start", {"deadline_hours": 2}, lambda e: None)
    row = threads.get(pool, "d5")
    assert (row.deadline, row.deadline_hours) == (NOW + timedelta(hours=2), 2)


def test_a_redraft_gets_a_fresh_deadline_from_when_it_waits_again(runner_at, pool):
    rules = BILLING + [("Rewrite the support reply", "Sorry: it is a pending authorization.")]
    runner_at(SUPPORT, rules).start("d6", "I was charged twice this month", {}, lambda e: None)
    later = runner_at(SUPPORT, rules, NOW + timedelta(hours=5))
    later.decide("d6", "rejected", actor="ann", note="apologise")
    later.resume("d6", lambda e: None)
    assert threads.get(pool, "d6").deadline == NOW + timedelta(hours=5 + 24)


def test_settling_again_at_the_same_gate_keeps_its_deadline_and_clears_a_stale_chain(runner_at, pool):
    """settle marks a thread waiting in one statement (threads.mark_waiting): a run settled
    again at the gate it already waits at (recover after a crash) keeps the deadline it had,
    and a chain stored by an earlier gate visit is cleared when this visit has no amount."""
    runner_at(SUPPORT, TECHNICAL).start("d7", "The app crashes on start", {"deadline_hours": 3}, lambda e: None)
    with pool.connection() as conn:
        conn.execute("INSERT INTO approval_waits (thread_id, waiting_for) VALUES ('d7', 'finance (stale)')")
    later = runner_at(SUPPORT, TECHNICAL, NOW + timedelta(hours=1))
    stop = later.settle("d7")
    row = threads.get(pool, "d7")
    assert (stop.status, row.status, row.gate) == ("waiting", "waiting", "review")
    assert row.deadline == NOW + timedelta(hours=3), "the deadline is the first visit's, not reset by settling again"
    assert count_rows(pool, "approval_waits", thread_id="d7") == 0
    threads.set_status(pool, "d7", "running")  # as a run on after a decision leaves it
    later.settle("d7")
    assert threads.get(pool, "d7").deadline == NOW + timedelta(hours=1 + 3), "waiting anew: the thread's own hours from now"


@pytest.mark.parametrize("spec, rules", [(REVISION, WRITING), (RESEARCH, RESEARCHING)], ids=["revision", "research"])
def test_an_expired_publish_gate_ends_the_thread_unpublished(spec, rules, runner_at, pool, make_context, tmp_path):
    out = tmp_path / "out"
    stop = runner_at(spec, rules).start("p1", "durable workflows and approval deadlines", {"out_dir": str(out)}, lambda e: None)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    stops = expire_due(pool, make_context(scripted_registry(rules), clock=clock_at(NOW + timedelta(hours=25))), lambda e: None)
    assert [(s.status, s.values["outcome"]) for s in stops] == [("finished", "not_published")]
    assert count_rows(pool, "documents") == 0
    assert not out.exists() or not any(out.iterdir()), "no file either"
    assert count_rows(pool, "approvals", thread_id="p1", decision="expired") == 1
    assert ("decision_expired", EXPIRY_ACTOR) in audit_kinds(pool, "p1")


def test_every_graph_has_a_deadline_and_a_default_action():
    for spec in GRAPHS.values():
        assert spec.deadline_hours > 0 and spec.gates, spec.name


# --- through the CLI -------------------------------------------------------------------------


@pytest.fixture
def server():
    with FaultServer() as server:
        for needle, answer in TECHNICAL:
            server.rule(needle, ok(answer))
        yield server


@pytest.fixture
def env(database_url: str, server: FaultServer, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url, "SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_MODEL": "openai:test-model",
        "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key",
    }


@pytest.fixture
def cli(env: dict[str, str]):
    def invoke(*args: str, **extra_env: str):
        return CliRunner().invoke(app, list(args), env={**env, **extra_env})

    return invoke


def past_deadline(pool, tid: str) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET deadline = now() - interval '1 minute' WHERE thread_id = %s", (tid,))


def test_start_deadline_flag_is_hours_from_now(cli, pool):
    before = datetime.now(timezone.utc)
    assert cli("start", "support", "The app crashes on start", "--thread", "c1", "--deadline", "2").exit_code == 0
    after = datetime.now(timezone.utc)
    row = threads.get(pool, "c1")
    assert row.deadline_hours == 2
    assert before + timedelta(hours=2) <= row.deadline <= after + timedelta(hours=2)


def test_per_graph_deadline_from_the_environment_and_the_flag_beats_it(cli, pool):
    assert cli("start", "support", "The app crashes", "--thread", "c2", SIGNOFF_SUPPORT_DEADLINE_HOURS="5", SIGNOFF_GATE_DEADLINE_HOURS="7").exit_code == 0
    assert cli("start", "support", "The app crashes", "--thread", "c3", SIGNOFF_GATE_DEADLINE_HOURS="7").exit_code == 0
    assert cli("start", "support", "The app crashes", "--thread", "c4", "--deadline", "1.5", SIGNOFF_SUPPORT_DEADLINE_HOURS="5").exit_code == 0
    assert [threads.get(pool, t).deadline_hours for t in ("c2", "c3", "c4")] == [5, 7, 1.5]


def test_expire_applies_the_default_of_every_gate_past_its_deadline(cli, pool):
    cli("start", "support", "The app crashes on start", "--thread", "c5")
    cli("start", "support", "The app crashes again", "--thread", "c6")
    assert "no gate is past its deadline" in cli("expire").output
    past_deadline(pool, "c5")
    result = cli("expire")
    assert result.exit_code == 0, result.output
    assert "expired: c5 (support) -> finished holding" in result.output and "c6" not in result.output
    assert threads.get(pool, "c5").status == "finished" and threads.get(pool, "c6").status == "waiting"
    assert count_rows(pool, "approvals", thread_id="c5", decision="expired") == 1


def test_pending_only_reads_it_marks_an_overdue_gate_and_sends_nothing(cli, pool, database_url):
    cli("start", "support", "The app crashes on start", "--thread", "c7")
    past_deadline(pool, "c7")
    before = table_counts(database_url)
    result = cli("pending")
    assert result.exit_code == 0, result.output
    assert re.search(r"^c7 .* overdue ", result.output, re.M), result.output
    assert "signoff expire" in result.output
    assert table_counts(database_url) == before, "a listing changes nothing"
    assert threads.get(pool, "c7").status == "waiting"
    expired = cli("expire")
    assert "expired: c7 (support) -> finished holding" in expired.output
    assert count_rows(pool, "outbox", thread_id="c7", kind="holding") == 1


def test_approving_an_expired_thread_exits_nonzero_saying_the_deadline_decided_it(cli, pool, database_url):
    cli("start", "support", "The app crashes on start", "--thread", "c8")
    past_deadline(pool, "c8")
    result = cli("approve", "c8", *expect(database_url, "c8"))
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: already decided by {EXPIRY_ACTOR} at ") and lines[0].endswith("(expired)"), lines[0]
    assert count_rows(pool, "approvals", thread_id="c8") == 1, "the expiry, and no approval"
    assert count_rows(pool, "outbox", thread_id="c8", kind="holding") == 1
    assert threads.get(pool, "c8").status == "finished"
