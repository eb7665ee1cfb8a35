"""`approve --edit`: the reviewer edits the reply and the amount in $EDITOR (here a script). The
same or a lower amount: they approve exactly what they saved; a higher one is only proposed (no
earlier approval counts for it, the chain starts over at the first stage it needs, and the
editor may not approve it). The audit keeps both digests and the diff."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkpoint.identity import os_user
from cli import app
from tests.conftest import count_rows, expect
from tests.fault_server import ok
from tests.refund_fixtures import OWNER, REFUND_MESSAGE, flat, orders, server  # noqa: F401 - fixtures
from tests.test_approval_chain import POLICY

def editor(tmp_path: Path, script: str) -> str:
    """An $EDITOR: a shell script that edits the file it is given."""
    path = tmp_path / f"editor-{abs(hash(script))}.sh"
    path.write_text("#!/bin/sh\nset -e\n" + script + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run(env, *args, **extra):
    return CliRunner().invoke(app, list(args), env={**env, **extra})


@pytest.fixture
def lead(pool) -> str:
    """SIGNOFF_TOKEN for "lead", a reviewer other than the requester (the OS login)."""
    from checkpoint import tokens

    return tokens.create(pool, "lead")


@pytest.fixture
def waiting(cli, orders):
    assert cli("start", "support", REFUND_MESSAGE, "--email", OWNER, "--thread", "e1").exit_code == 0


def test_an_edited_down_amount_is_approved_and_refunded_with_both_digests_audited(env, pool, database_url, tmp_path, waiting, lead):
    before = expect(database_url, "e1")[1]
    lower = editor(tmp_path, "sed -i 's/^amount: 149.00 USD/amount: 90.00 USD/; s/refunded 149.00 USD/refunded 90.00 USD/' \"$1\"")
    result = run(env, "approve", "e1", "--edit", EDITOR=lower, SIGNOFF_TOKEN=lead)
    assert result.exit_code == 0, result.output
    assert f"digest {before} ->" in flat(result.output) and "refunded 90.00 USD on order 1042" in flat(result.output)
    with pool.connection() as conn:
        ledger = conn.execute("SELECT kind, amount_cents FROM ledger_entries ORDER BY id").fetchall()
        edited = conn.execute("SELECT actor, detail FROM audit_events WHERE kind = 'content_edited'").fetchone()
        approval = conn.execute("SELECT actor, digest FROM approvals WHERE thread_id = 'e1'").fetchone()
        sent = conn.execute("SELECT body FROM outbox WHERE thread_id = 'e1'").fetchone()["body"]
    assert [(r["kind"], r["amount_cents"]) for r in ledger] == [("credit_note", 9000), ("refund", 9000)]
    detail = edited["detail"]
    assert edited["actor"] == "lead" and detail["before_digest"] == before and detail["after_digest"] == approval["digest"] != before
    assert "-action: refund(1042, 149.00, USD)" in detail["diff"] and "+action: refund(1042, 90.00, USD)" in detail["diff"]
    assert (detail["amount_before"], detail["amount_after"]) == (14900, 9000)
    assert "90.00 USD" in sent and approval["actor"] == "lead"


@pytest.mark.parametrize("script, says, code", [
    ("sed -i 's/^amount: 149.00 USD/amount: 150.00 USD/' \"$1\"", "150.00 USD is more than the 149.00 USD left to refund on order 1042", 2),
    ("sed -i 's/^amount: 149.00 USD/amount: 100.00 EUR/' \"$1\"", "the currency cannot change", 2),
    ("sed -i 's/^amount: 149.00 USD/amount: nan USD/' \"$1\"", "must be a positive number", 2),
    ("sed -i '/^amount:/d' \"$1\"", "keep exactly one 'amount", 2),
    ("sed -i 's/refunded 149.00 USD/refunded 200.00 USD/' \"$1\"", "the reply states 200.00 USD, but the refund is 149.00 USD", 2),
    ("sed -i 's/^amount: 149.00 USD/amount: 90.00 USD/; s/refunded 149.00 USD/refunded 100 dollars/' \"$1\"",
     "the reply states 100 dollars, but the refund is 90.00 USD", 2),
    ("sed -i 's/We have refunded 149.00 USD for/We have refunded/' \"$1\"", "the reply does not state the amount refunded (149.00 USD)", 2),
    ("printf '# only comments\\n--- reply ---\\n# nothing\\n' > \"$1\"", "the edited reply is empty", 2),
    ("printf 'amount: 1 USD\\n' > \"$1\"", "lost its '--- reply ---' line", 2),
    ("exit 3", "the editor exited with code 3", 4),
])
def test_a_refused_edit_changes_nothing(env, pool, database_url, tmp_path, waiting, lead, script, says, code):
    before = expect(database_url, "e1")
    result = run(env, "approve", "e1", "--edit", EDITOR=editor(tmp_path, script), SIGNOFF_TOKEN=lead)
    assert result.exit_code == code and says in flat(result.output), result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert expect(database_url, "e1") == before
    assert count_rows(pool, "approvals") == 0 and count_rows(pool, "payment_operations") == 0
    assert count_rows(pool, "audit_events", kind="content_edited") == 0


def sent_reply(pool, tid: str) -> str:
    with pool.connection() as conn:
        return conn.execute("SELECT body FROM outbox WHERE thread_id = %s AND kind = 'reply'", (tid,)).fetchone()["body"]


def ledger(pool) -> list[tuple[str, int]]:
    with pool.connection() as conn:
        return [(r["kind"], r["amount_cents"]) for r in conn.execute("SELECT kind, amount_cents FROM ledger_entries ORDER BY id")]


def test_lowering_only_the_amount_line_tells_the_customer_the_lower_amount_paid(env, pool, tmp_path, waiting, lead):
    lower = editor(tmp_path, "sed -i 's/^amount: 149.00 USD/amount: 90.00 USD/' \"$1\"")
    result = run(env, "approve", "e1", "--edit", EDITOR=lower, SIGNOFF_TOKEN=lead)
    assert result.exit_code == 0 and "the reply stated the old amount, so it now states the new one" in flat(result.output), result.output
    assert ledger(pool) == [("credit_note", 9000), ("refund", 9000)]
    sent = sent_reply(pool, "e1")
    assert "We have refunded 90.00 USD for order 1042" in sent and "149" not in sent, "no promise of money that is not paid"


def test_the_requester_may_not_even_open_the_editor(env, pool, tmp_path, waiting):
    touched = tmp_path / "touched"
    result = run(env, "approve", "e1", "--edit", EDITOR=editor(tmp_path, f"touch {touched}"))
    assert result.exit_code == 4 and f"{os_user()} started this thread" in result.output
    assert not touched.exists()


def test_an_unchanged_edit_approves_the_same_digest(env, pool, database_url, tmp_path, waiting, lead):
    before = expect(database_url, "e1")[1]
    result = run(env, "approve", "e1", "--edit", EDITOR=editor(tmp_path, "true"), SIGNOFF_TOKEN=lead)
    assert result.exit_code == 0 and "refunded 149.00 USD" in flat(result.output)
    with pool.connection() as conn:
        assert conn.execute("SELECT digest FROM approvals").fetchone()["digest"] == before
    assert count_rows(pool, "audit_events", kind="content_edited") == 0


def test_editing_a_reply_without_an_action(env, pool, database_url, tmp_path, cli, orders):
    assert cli("start", "support", "Please refund order 1007", "--email", "liam.chen@example.com", "--thread", "x1").exit_code == 0
    reword = editor(tmp_path, "sed -i 's/^Order 1007 was placed/Sorry: order 1007 was placed/' \"$1\"")
    result = run(env, "approve", "x1", "--edit", EDITOR=reword)
    assert result.exit_code == 0, result.output
    with pool.connection() as conn:
        assert conn.execute("SELECT body FROM outbox WHERE thread_id = 'x1'").fetchone()["body"].startswith("Sorry: order 1007")


def test_an_edit_that_promises_money_on_a_request_with_no_refund_is_refused(env, pool, database_url, tmp_path, cli, orders):
    assert cli("start", "support", "Please refund order 1007", "--email", "liam.chen@example.com", "--thread", "x2").exit_code == 0
    before = expect(database_url, "x2")
    promise = editor(tmp_path, "sed -i 's/^Order 1007 was placed/We have refunded 49.00 USD. Order 1007 was placed/' \"$1\"")
    result = run(env, "approve", "x2", "--edit", EDITOR=promise)
    assert result.exit_code == 2 and "the reply states 49.00 USD, but no refund is proposed for this request" in flat(result.output), result.output
    assert expect(database_url, "x2") == before and count_rows(pool, "approvals") == 0 and count_rows(pool, "outbox") == 0


def test_finance_edits_down_and_the_support_lead_approval_carries_over(env, pool, database_url, tmp_path, server, monkeypatch, orders):
    path = tmp_path / "signoff.toml"
    path.write_text(POLICY, encoding="utf-8")

    def as_user(user: str, *args: str, **extra: str):
        monkeypatch.setattr("checkpoint.identity.os_user", lambda: user)
        return run(env, *args, **extra)

    assert as_user("root", "policy", "load", str(path)).exit_code == 0
    server.rule("Extract the refund request", ok('{"order_id": "1021", "amount": null}'))
    assert as_user("mia", "start", "support", "Please refund order 1021", "--email", "noah.kim@example.com", "--thread", "c1").exit_code == 0
    assert as_user("alice", "approve", "c1", *expect(database_url, "c1")).exit_code == 0
    lower = editor(tmp_path, "sed -i 's/^amount: 1499.00 USD/amount: 900.00 USD/' \"$1\"")
    nobody = as_user("bob", "approve", "c1", "--edit", EDITOR=lower)
    assert nobody.exit_code == 4 and "bob is not a member of finance" in nobody.output, "who may not approve may not edit"
    result = as_user("carol", "approve", "c1", "--edit", EDITOR=lower)
    assert result.exit_code == 0 and "refunded 900.00 USD on order 1021" in flat(result.output), result.output
    with pool.connection() as conn:
        detail = conn.execute("SELECT detail FROM audit_events WHERE kind = 'content_edited'").fetchone()["detail"]
        assert detail["approvals_carried_over"] == ["alice"]
        assert conn.execute("SELECT actor FROM approvals WHERE thread_id = 'c1'").fetchone()["actor"] == "carol"


# --- raising the amount: a proposal, not an approval -------------------------------------------------


@pytest.fixture
def as_user(env, tmp_path, monkeypatch, server, orders):
    """`as_user(user, *args, EDITOR=...)`: the CLI run by that OS user, with POLICY loaded."""

    def invoke(user: str, *args: str, **extra: str):
        monkeypatch.setattr("checkpoint.identity.os_user", lambda: user)
        return run(env, *args, **extra)

    path = tmp_path / "signoff.toml"
    path.write_text(POLICY, encoding="utf-8")
    assert invoke("root", "policy", "load", str(path)).exit_code == 0
    return invoke


def ask_for(server, as_user, order: str, amount: int, email: str, tid: str) -> None:
    server.once("Extract the refund request", ok(f'{{"order_id": "{order}", "amount": {amount}}}'))
    started = as_user("mia", "start", "support", f"Please refund {amount} dollars of order {order}", "--email", email, "--thread", tid)
    assert started.exit_code == 0, started.output


def set_amount(tmp_path: Path, old: str, new: str) -> str:
    return editor(tmp_path, f"sed -i 's/^amount: {old} USD/amount: {new} USD/; s/refunded {old} USD/refunded {new} USD/' \"$1\"")


def edit_row(pool, tid: str) -> dict:
    with pool.connection() as conn:
        return conn.execute("SELECT actor, detail FROM audit_events WHERE thread_id = %s AND kind = 'content_edited' ORDER BY id DESC LIMIT 1",
                            (tid,)).fetchone()


def test_raising_into_a_higher_stage_is_a_proposal_that_support_lead_must_approve(pool, database_url, tmp_path, server, as_user):
    ask_for(server, as_user, "1042", 80, OWNER, "r1")  # 80 USD: one stage, any reviewer but the requester
    old = expect(database_url, "r1")
    raised = as_user("sam", "approve", "r1", "--edit", EDITOR=set_amount(tmp_path, "80.00", "140.00"))
    assert raised.exit_code == 0, raised.output
    said = flat(raised.output)
    assert "this is a proposal, not an approval" in said and "approval needed: stage 1/1 support-lead (1 of alice, bob)" in said
    assert "amount raised by sam, who may not approve it" in said
    assert count_rows(pool, "approvals") == 0 and count_rows(pool, "stage_approvals") == 0, "the edit approved nothing"
    edited = edit_row(pool, "r1")
    assert edited["actor"] == "sam" and edited["detail"]["raised"] is True and edited["detail"]["may_not_approve"] == ["sam"]
    assert (edited["detail"]["amount_before"], edited["detail"]["amount_after"]) == (8000, 14000)
    assert edited["detail"]["before_digest"] == old[1] and edited["detail"]["after_digest"] == expect(database_url, "r1")[1] != old[1]
    assert "+action: refund(1042, 140.00, USD)" in edited["detail"]["diff"]
    assert "waits for stage 1/1 support-lead" in flat(as_user("x", "pending").output)

    stale = as_user("alice", "approve", "r1", *old)
    assert stale.exit_code == 4 and "the content changed since you reviewed it" in stale.output, "the old digest approves nothing"
    # sam passes as a reviewer of the old single stage, but proposed the new amount; and is no support-lead
    assert as_user("sam", "approve", "r1", *expect(database_url, "r1")).exit_code == 4
    own = as_user("mia", "approve", "r1", *expect(database_url, "r1"))
    assert own.exit_code == 4 and "mia started this thread" in own.output
    done = as_user("alice", "approve", "r1", *expect(database_url, "r1"))
    assert done.exit_code == 0 and "refunded 140.00 USD on order 1042" in flat(done.output), done.output
    with pool.connection() as conn:
        assert [(r["kind"], r["amount_cents"]) for r in conn.execute("SELECT kind, amount_cents FROM ledger_entries ORDER BY id")] == [
            ("credit_note", 14000), ("refund", 14000)]
        assert conn.execute("SELECT actor FROM approvals").fetchone()["actor"] == "alice"


def test_raising_within_the_same_stage_needs_a_fresh_approval_and_not_the_editors(pool, database_url, tmp_path, server, as_user):
    ask_for(server, as_user, "1042", 120, OWNER, "r2")  # 120 USD: support-lead
    raised = as_user("bob", "approve", "r2", "--edit", EDITOR=set_amount(tmp_path, "120.00", "140.00"))
    assert raised.exit_code == 0 and "this is a proposal" in flat(raised.output), raised.output
    assert count_rows(pool, "approvals") == 0 and count_rows(pool, "payment_operations") == 0
    bob = as_user("bob", "approve", "r2", *expect(database_url, "r2"))
    assert bob.exit_code == 4 and "bob raised the amount of this refund" in flat(bob.output)
    # the raiser may not slip the proposal through by lowering it a little either (a lowering approves)
    lower = as_user("bob", "approve", "r2", "--edit", EDITOR=set_amount(tmp_path, "140.00", "139.00"))
    assert lower.exit_code == 4 and "bob raised the amount" in flat(lower.output) and count_rows(pool, "approvals") == 0
    done = as_user("alice", "approve", "r2", *expect(database_url, "r2"))
    assert done.exit_code == 0 and "refunded 140.00 USD" in flat(done.output), done.output


def test_raising_150_to_1499_needs_support_lead_then_finance(pool, database_url, tmp_path, server, as_user):
    ask_for(server, as_user, "1021", 150, "noah.kim@example.com", "r3")  # 150 USD: support-lead only
    raised = as_user("alice", "approve", "r3", "--edit", EDITOR=set_amount(tmp_path, "150.00", "1499.00"))
    assert raised.exit_code == 0 and "approval needed: stage 1/2 support-lead" in flat(raised.output), raised.output
    assert as_user("alice", "approve", "r3", *expect(database_url, "r3")).exit_code == 4, "alice proposed 1499"
    assert as_user("bob", "approve", "r3", *expect(database_url, "r3")).exit_code == 0  # stage 1
    assert "waits for stage 2/2 finance (2 of carol, dave, erin)" in flat(as_user("x", "pending").output)
    # finance edits the reply only: that approves (stage 2), and bob's stage-1 approval carries over
    reworded = as_user("carol", "approve", "r3", "--edit", EDITOR=editor(tmp_path, "sed -i 's/original payment method/card/' \"$1\""))
    assert reworded.exit_code == 0 and "approved stage 2/2 (finance)" in flat(reworded.output), reworded.output
    assert edit_row(pool, "r3")["detail"]["approvals_carried_over"] == ["bob"]
    done = as_user("dave", "approve", "r3", *expect(database_url, "r3"))
    assert done.exit_code == 0 and "refunded 1499.00 USD on order 1021" in flat(done.output), done.output


def test_a_raise_after_stage_one_voids_it(pool, database_url, tmp_path, server, as_user):
    ask_for(server, as_user, "1021", 1100, "noah.kim@example.com", "r4")  # support-lead, then finance
    assert as_user("alice", "approve", "r4", *expect(database_url, "r4")).exit_code == 0
    raised = as_user("carol", "approve", "r4", "--edit", EDITOR=set_amount(tmp_path, "1100.00", "1200.00"))
    assert raised.exit_code == 0 and "approval needed: stage 1/2 support-lead (1 of alice, bob)" in flat(raised.output), raised.output
    detail = edit_row(pool, "r4")["detail"]
    assert detail["approvals_voided"] == ["alice"] and detail["approvals_carried_over"] == []
    shown = json.loads(as_user("x", "show", "r4", "--json").output)["stage"]
    assert (shown["number"], shown["role"], shown["approved_by"]) == (1, "support-lead", [])
    assert as_user("alice", "approve", "r4", *expect(database_url, "r4")).exit_code == 0, "alice approves the new amount afresh"
    carol = as_user("carol", "approve", "r4", *expect(database_url, "r4"))
    assert carol.exit_code == 4 and "carol raised the amount" in flat(carol.output)
    assert as_user("dave", "approve", "r4", *expect(database_url, "r4")).exit_code == 0
    done = as_user("erin", "approve", "r4", *expect(database_url, "r4"))
    assert done.exit_code == 0 and "refunded 1200.00 USD on order 1021" in flat(done.output), done.output


def test_an_edit_approval_hands_the_run_to_a_worker_as_plain_approve_does(env, pool, database_url, tmp_path, waiting, lead):
    """--detach (or a live worker: the same branch, `run_on`): the approval is recorded and the
    thread queued for a worker; this terminal moves no money itself."""
    from checkpoint import jobs

    lower = editor(tmp_path, "sed -i 's/^amount: 149.00 USD/amount: 90.00 USD/' \"$1\"")
    result = run(env, "approve", "e1", "--edit", "--detach", EDITOR=lower, SIGNOFF_TOKEN=lead)
    assert result.exit_code == 0 and "approved e1 by lead; handed to a worker" in flat(result.output), result.output
    assert jobs.active_job(pool, "e1") is not None
    assert count_rows(pool, "approvals") == 1 and count_rows(pool, "payment_operations") == 0


def test_raising_only_the_amount_line_tells_the_customer_the_amount_paid(pool, database_url, tmp_path, server, as_user):
    ask_for(server, as_user, "1042", 50, OWNER, "m1")
    assert "We have refunded 50.00 USD for order 1042" in flat(as_user("x", "show", "m1").output)
    raised = as_user("sam", "approve", "m1", "--edit", EDITOR=editor(tmp_path, "sed -i 's/^amount: 50.00 USD/amount: 149.00 USD/' \"$1\""))
    assert raised.exit_code == 0 and "now states the new one" in flat(raised.output), raised.output
    shown = flat(as_user("x", "show", "m1").output)
    assert "action: refund(1042, 149.00, USD)" in shown and "We have refunded 149.00 USD for order 1042" in shown and "50.00" not in shown
    done = as_user("alice", "approve", "m1", *expect(database_url, "m1"))
    assert done.exit_code == 0 and "refunded 149.00 USD on order 1042" in flat(done.output), done.output
    assert ledger(pool) == [("credit_note", 14900), ("refund", 14900)]
    sent = sent_reply(pool, "m1")
    assert "We have refunded 149.00 USD" in sent and "50.00" not in sent, "the reply states the amount paid"
