"""`approve --edit`: the reviewer edits the reply and lowers the amount in $EDITOR (here a script),
and approves exactly what they saved; the audit keeps both digests and the diff."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import count_rows, expect
from tests.fault_server import FaultServer, ok
from tests.test_approval_chain import POLICY

MESSAGE = "Please refund order 1042, it arrived broken"
OWNER = "maya.lopez@example.com"


@pytest.fixture
def server():
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "billing"}'))
        server.rule("Extract the refund request", ok('{"order_id": "1042", "amount": null}'))
        yield server


def editor(tmp_path: Path, script: str) -> str:
    """An $EDITOR: a shell script that edits the file it is given."""
    path = tmp_path / f"editor-{abs(hash(script))}.sh"
    path.write_text("#!/bin/sh\nset -e\n" + script + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run(env, *args, **extra):
    return CliRunner().invoke(app, list(args), env={**env, **extra})


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def waiting(cli, orders_loaded):
    assert cli("start", "support", MESSAGE, "--email", OWNER, "--thread", "e1").exit_code == 0


@pytest.fixture
def orders_loaded(cli):
    assert cli("orders", "load").exit_code == 0


def test_an_edited_down_amount_is_approved_and_refunded_with_both_digests_audited(env, pool, database_url, tmp_path, waiting):
    before = expect(database_url, "e1")[1]
    lower = editor(tmp_path, "sed -i 's/^amount: 149.00 USD/amount: 90.00 USD/; s/refunded 149.00 USD/refunded 90.00 USD/' \"$1\"")
    result = run(env, "approve", "e1", "--by", "lead", "--edit", EDITOR=lower)
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
    ("sed -i 's/^amount: 149.00 USD/amount: 150.00 USD/' \"$1\"", "the amount may only go down (149.00 -> 150.00)", 2),
    ("sed -i 's/^amount: 149.00 USD/amount: 100.00 EUR/' \"$1\"", "the currency cannot change", 2),
    ("sed -i 's/^amount: 149.00 USD/amount: nan USD/' \"$1\"", "must be a positive number", 2),
    ("sed -i '/^amount:/d' \"$1\"", "keep exactly one 'amount", 2),
    ("printf '# only comments\\n--- reply ---\\n# nothing\\n' > \"$1\"", "the edited reply is empty", 2),
    ("printf 'amount: 1 USD\\n' > \"$1\"", "lost its '--- reply ---' line", 2),
    ("exit 3", "the editor exited with code 3", 4),
])
def test_a_refused_edit_changes_nothing(env, pool, database_url, tmp_path, waiting, script, says, code):
    before = expect(database_url, "e1")
    result = run(env, "approve", "e1", "--by", "lead", "--edit", EDITOR=editor(tmp_path, script))
    assert result.exit_code == code and says in flat(result.output), result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert expect(database_url, "e1") == before
    assert count_rows(pool, "approvals") == 0 and count_rows(pool, "payment_operations") == 0
    assert count_rows(pool, "audit_events", kind="content_edited") == 0


def test_the_requester_may_not_even_open_the_editor(env, pool, tmp_path, waiting):
    touched = tmp_path / "touched"
    result = run(env, "approve", "e1", "--edit", EDITOR=editor(tmp_path, f"touch {touched}"))
    assert result.exit_code == 4 and "tester started this thread" in result.output
    assert not touched.exists()


def test_an_unchanged_edit_approves_the_same_digest(env, pool, database_url, tmp_path, waiting):
    before = expect(database_url, "e1")[1]
    result = run(env, "approve", "e1", "--by", "lead", "--edit", EDITOR=editor(tmp_path, "true"))
    assert result.exit_code == 0 and "refunded 149.00 USD" in flat(result.output)
    with pool.connection() as conn:
        assert conn.execute("SELECT digest FROM approvals").fetchone()["digest"] == before
    assert count_rows(pool, "audit_events", kind="content_edited") == 0


def test_editing_a_reply_without_an_action(env, pool, database_url, tmp_path, cli, orders_loaded):
    assert cli("start", "support", "Please refund order 1007", "--email", "liam.chen@example.com", "--thread", "x1").exit_code == 0
    reword = editor(tmp_path, "sed -i 's/^Order 1007 was placed/Sorry: order 1007 was placed/' \"$1\"")
    result = run(env, "approve", "x1", "--edit", EDITOR=reword)
    assert result.exit_code == 0, result.output
    with pool.connection() as conn:
        assert conn.execute("SELECT body FROM outbox WHERE thread_id = 'x1'").fetchone()["body"].startswith("Sorry: order 1007")


def test_finance_edits_down_and_the_support_lead_approval_carries_over(env, pool, database_url, tmp_path, server, monkeypatch, orders_loaded):
    path = tmp_path / "signoff.toml"
    path.write_text(POLICY, encoding="utf-8")

    def as_user(user: str, *args: str, **extra: str):
        monkeypatch.setattr("checkpoint.policy.os_user", lambda: user)
        return run(env, *args, SIGNOFF_USER=None, **extra)  # type: ignore[arg-type]

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
