"""Approval chains: stages by amount, roles, N of M, the requester never approves, one person
counts once, a rejection at any stage ends the chain; the policy file and who the actor is."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkpoint.policy import DEFAULT, Policy, PolicyError, Stage, parse_policy
from cli import app
from tests.conftest import count_rows, expect
from tests.fault_server import FaultServer, ok
from tests.refund_fixtures import flat

#: The shipped example policy: support-lead (alice, bob) above 100 USD, then finance (2 of carol,
#: dave, erin) above 1,000 with a 48-hour deadline.
POLICY = (Path(__file__).resolve().parents[1] / "examples" / "signoff.toml").read_text(encoding="utf-8")


def in_currency(code: str) -> str:
    """The example policy with its thresholds in another currency."""
    return POLICY.replace('currency = "USD"', f'currency = "{code}"', 1)


@pytest.fixture
def server():
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "billing"}'))
        yield server


@pytest.fixture
def signoff(env, monkeypatch):
    """`signoff(user, *args)`: the CLI run by that OS user."""
    runner = CliRunner()

    def invoke(user: str, *args: str):
        monkeypatch.setattr("checkpoint.identity.os_user", lambda: user)
        # a notification channel, so each stage's own notification is queued (no worker delivers it here)
        return runner.invoke(app, list(args), env={**env, "SIGNOFF_NOTIFY_WEBHOOK": "http://127.0.0.1:9/hook",
                                                  "SIGNOFF_NOTIFY_WEBHOOK_SECRET": "test-secret"})

    return invoke


@pytest.fixture
def with_roles(signoff, tmp_path, cli):
    path = tmp_path / "signoff.toml"
    path.write_text(POLICY, encoding="utf-8")
    assert cli("orders", "load").exit_code == 0
    loaded = signoff("root", "policy", "load", str(path))
    assert loaded.exit_code == 0 and "2 roles, 1 gates" in flat(loaded.output), loaded.output


def ask(server, signoff, order: str, email: str, tid: str, user: str = "mia"):
    server.rule("Extract the refund request", ok(f'{{"order_id": "{order}", "amount": null}}'))
    result = signoff(user, "start", "support", f"Please refund order {order}", "--email", email, "--thread", tid)
    assert result.exit_code == 0, result.output
    return result


def audit(pool, tid):
    with pool.connection() as conn:
        return [(r["kind"], r["actor"]) for r in conn.execute(
            "SELECT kind, actor FROM audit_events WHERE thread_id = %s AND kind LIKE ANY (ARRAY['stage_%%', 'decision_%%', 'saga_%%']) ORDER BY id", (tid,))]


# --- the policy --------------------------------------------------------------------------------


def test_the_chain_depends_on_the_amount():
    assert [s.name for s in DEFAULT.chain("support", "review", 99_00)] == ["review"]
    assert [s.name for s in DEFAULT.chain("support", "review", 100_00)] == ["review"], "above the threshold, not at it"
    assert [s.name for s in DEFAULT.chain("support", "review", 149_00)] == ["support-lead"]
    assert [s.name for s in DEFAULT.chain("support", "review", 1499_00)] == ["support-lead", "finance"]
    policy = parse_policy(POLICY, "t")
    assert policy.roles["finance"] == ("carol", "dave", "erin")
    assert policy.chain("support", "review", 1499_00)[1] == Stage("finance", 1000_00, 2, 48.0)
    assert Policy().chain("revision", "publish", 10**9) == (Stage(None, 0),)


@pytest.mark.parametrize("text, says", [
    ("[roles\n", "not valid TOML"),
    ("[people]\n", "unknown section"),
    ('[roles]\n"Support Lead" = ["a"]\n', "lower-case"),
    ("[roles]\nlead = []\n", "needs a list"),
    ('[roles]\nlead = ["a\\nb"]\n', "needs a list"),
    ('[roles]\nlead = ["a"]\n[gates."support.review"]\nstages = [{ role = "finance", above = 1 }]\n', "not defined"),
    ('[roles]\nlead = ["a"]\n[gates."support.review"]\nstages = [{ role = "lead", above = 1, quorum = 2 }]\n', "more than the 1 members"),
    ('[roles]\nlead = ["a"]\n[gates."support.review"]\nstages = [{ role = "lead", above = nan }]\n', "above must be"),
    ('[roles]\nlead = ["a"]\n[gates."support.review"]\nstages = [{ role = "lead", above = 1, deadline_hours = inf }]\n', "deadline_hours"),
    ('[roles]\nlead = ["a"]\n[gates."support.review"]\nstages = [{ role = "lead" }]\n', "needs role and above"),
    ('[gates.support]\nstages = []\n', "GRAPH.GATE"),
])
def test_a_bad_policy_is_refused_saying_where(text, says):
    with pytest.raises(PolicyError, match=says):
        parse_policy(text, "signoff.toml")


# --- without roles (zero setup) -------------------------------------------------------------------


def test_without_roles_one_stage_by_anyone_but_the_requester(signoff, server, pool, database_url):
    assert signoff("root", "orders", "load").exit_code == 0
    server.rule("Extract the refund request", ok('{"order_id": "1030", "amount": null}'))  # 29.00 USD
    assert signoff("mia", "start", "support", "Please refund order 1030", "--email", "emma.novak@example.com", "--thread", "s1").exit_code == 0
    assert "stage 1/1 review (1 reviewer other than the requester, no roles configured)" in flat(signoff("x", "show", "s1").output)
    own = signoff("mia", "approve", "s1", *expect(database_url, "s1"))
    assert own.exit_code == 4 and "mia started this thread" in own.output
    done = signoff("sam", "approve", "s1", *expect(database_url, "s1"))
    assert done.exit_code == 0 and "refunded 29.00 USD" in flat(done.output), done.output
    assert count_rows(pool, "ledger_entries", kind="refund") == 1


# --- with roles -----------------------------------------------------------------------------------


def test_above_both_thresholds_support_lead_then_two_of_three_finance(signoff, server, pool, database_url, with_roles):
    start = ask(server, signoff, "1021", "noah.kim@example.com", "big")
    assert "approval needed: stage 1/2 support-lead (1 of alice, bob)" in flat(start.output)
    digest = expect(database_url, "big")

    refused = signoff("carol", "approve", "big", *digest)
    assert refused.exit_code == 4 and "carol is not a member of support-lead" in refused.output
    by_flag = signoff("alice", "approve", "big", "--by", "bob", *digest)
    assert by_flag.exit_code == 2 and "--by no longer chooses who acts" in by_flag.output

    first = signoff("alice", "approve", "big", *digest)
    assert first.exit_code == 0 and "approved stage 1/2 (support-lead)" in flat(first.output), first.output
    assert "waiting for stage 2/2 finance (2 of carol, dave, erin)" in flat(first.output)
    listed = signoff("x", "pending")
    assert "waits for stage 2/2 finance (2 of carol, dave, erin)" in flat(listed.output)
    assert json.loads(signoff("x", "pending", "--json").output)["threads"][0]["waiting_for"].startswith("stage 2/2 finance")

    again = signoff("alice", "approve", "big", *digest)
    assert again.exit_code == 0 and "already approved" in again.output
    bob = signoff("bob", "approve", "big", *digest)
    assert bob.exit_code == 4 and "bob is not a member of finance" in bob.output

    second = signoff("carol", "approve", "big", *digest)
    assert second.exit_code == 0 and "1 so far" in flat(second.output)
    assert count_rows(pool, "payment_operations") == 0, "nothing moves before the last approval"
    last = signoff("dave", "approve", "big", *digest)
    assert last.exit_code == 0 and "refunded 1499.00 USD on order 1021" in flat(last.output), last.output

    assert audit(pool, "big") == [
        ("stage_approved", "alice"), ("stage_waiting", "signoff"), ("stage_approved", "carol"),
        ("decision_approved", "dave"),  # the approval that completes the chain is the gate's decision
        ("saga_credit_note", "signoff"), ("saga_refund", "signoff"),
    ]
    with pool.connection() as conn:
        assert [r["actor"] for r in conn.execute("SELECT actor FROM approvals WHERE thread_id = 'big'")] == ["dave"]
        deadline = conn.execute("SELECT detail FROM audit_events WHERE kind = 'stage_waiting'").fetchone()["detail"]["deadline_hours"]
        notified = [(r["visit"].rsplit(":", 1)[-1] if ":" in r["visit"] else "gate", r["facts"]["summary"]) for r in conn.execute(
            "SELECT visit, facts FROM notifications WHERE thread_id = 'big' AND event = 'waiting' ORDER BY id")]
    assert deadline == 48
    assert len(notified) == 2 and notified[1][0] == "stage2" and "finance" in notified[1][1], "each stage notifies its own"


def test_between_thresholds_needs_support_lead_only(signoff, server, pool, database_url, with_roles):
    ask(server, signoff, "1042", "maya.lopez@example.com", "mid")
    done = signoff("bob", "approve", "mid", *expect(database_url, "mid"))
    assert done.exit_code == 0 and "refunded 149.00 USD" in flat(done.output)


def test_the_requester_may_not_approve_even_as_a_member(signoff, server, database_url, with_roles):
    ask(server, signoff, "1042", "maya.lopez@example.com", "own", user="alice")
    refused = signoff("alice", "approve", "own", *expect(database_url, "own"))
    assert refused.exit_code == 4 and "alice started this thread and may not decide its approval" in refused.output


def test_a_rejection_at_stage_two_ends_the_chain(signoff, server, pool, database_url, with_roles):
    server.rule("Rewrite the support reply", ok("We are looking into the refund of order 1021."))
    ask(server, signoff, "1021", "noah.kim@example.com", "rej")
    assert signoff("alice", "approve", "rej", *expect(database_url, "rej")).exit_code == 0
    outsider = signoff("alice", "reject", "rej", "--feedback", "no")
    assert outsider.exit_code == 4 and "alice is not a member of finance" in outsider.output, "only the waiting stage decides"
    rejected = signoff("erin", "reject", "rej", "--feedback", "needs the invoice first")
    assert rejected.exit_code == 0, rejected.output
    with pool.connection() as conn:
        assert [(r["decision"], r["actor"]) for r in conn.execute("SELECT decision, actor FROM approvals WHERE thread_id = 'rej'")] == [("rejected", "erin")]
    assert count_rows(pool, "payment_operations") == 0
    # The redraft waits at the gate again, and its chain starts over from stage 1.
    assert "stage 1/2 support-lead (1 of alice, bob)" in flat(signoff("x", "show", "rej").output)


def test_the_next_stage_gets_its_own_deadline(signoff, server, pool, database_url, with_roles):
    ask(server, signoff, "1021", "noah.kim@example.com", "dl")
    with pool.connection() as conn:
        before = conn.execute("SELECT deadline FROM threads WHERE thread_id = 'dl'").fetchone()["deadline"]
    assert signoff("bob", "approve", "dl", *expect(database_url, "dl")).exit_code == 0
    with pool.connection() as conn:
        after = conn.execute("SELECT deadline FROM threads WHERE thread_id = 'dl'").fetchone()["deadline"]
    assert after - before > timedelta(hours=23), "finance waits 48 hours from when its stage began"


def test_policy_show(signoff, with_roles):
    shown = json.loads(signoff("x", "policy", "show", "--json").output)
    assert shown["roles"]["finance"] == ["carol", "dave", "erin"]
    assert shown["gates"]["support.review"][1] == {"role": "finance", "above": 1000.0, "quorum": 2, "deadline_hours": 48.0}
    assert "support.review stage 2: finance above 1000.00, 2 approvals, deadline 48h" in signoff("x", "policy", "show").output


def test_over_http_the_token_owner_decides_each_stage(signoff, server, pool, database_url, with_roles):
    """The HTTP API (`signoff serve`): the actor is the token's owner, a stage approval is
    answered as one (nothing queued for a worker), and only the last approval decides the gate."""
    from starlette.testclient import TestClient

    from checkpoint import tokens
    from web.app import WebContext, create_app

    ask(server, signoff, "1021", "noah.kim@example.com", "web")
    digest = expect(database_url, "web")[1]
    names = {name: tokens.create(pool, name) for name in ("alice", "bob", "carol", "dave", "mia")}
    with TestClient(create_app(WebContext(pool=pool, key=b"k" * 40, public_url="http://127.0.0.1:8321")), base_url="http://127.0.0.1") as client:
        def approve(name: str):
            return client.post("/api/threads/web/approve", json={"expect": digest}, headers={"Authorization": f"Bearer {names[name]}"})

        assert approve("mia").status_code == 409, "the requester (who started it) may not approve"
        first = approve("alice")
        assert first.status_code == 202 and first.json()["decision"] == "stage_approved" and first.json()["job"] is None
        assert first.json()["waiting_for"].startswith("stage 2/2 finance")
        assert approve("bob").status_code == 409
        assert approve("carol").json()["decision"] == "stage_approved"
        last = approve("dave")
        assert last.status_code == 202 and last.json()["decision"] == "approved" and last.json()["job"] is not None
    with pool.connection() as conn:
        assert [r["actor"] for r in conn.execute("SELECT actor FROM approvals WHERE thread_id = 'web'")] == ["dave"]
        assert [r["actor"] for r in conn.execute("SELECT actor FROM stage_approvals WHERE thread_id = 'web' ORDER BY id")] == ["alice", "carol"]


def test_a_policy_that_renames_a_stage_voids_its_approvals(signoff, server, pool, database_url, tmp_path, with_roles):
    ask(server, signoff, "1021", "noah.kim@example.com", "re")
    assert signoff("alice", "approve", "re", *expect(database_url, "re")).exit_code == 0
    swapped = tmp_path / "swapped.toml"
    swapped.write_text(POLICY.replace('{ role = "support-lead", above = 100 }', '{ role = "finance", above = 100 }')
                       .replace('{ role = "finance", above = 1000, quorum = 2, deadline_hours = 48 }', '{ role = "support-lead", above = 1000 }'),
                       encoding="utf-8")
    assert signoff("root", "policy", "load", str(swapped)).exit_code == 0
    # alice's approval was for support-lead at stage 1; stage 1 now asks for finance: it waits again.
    again = signoff("alice", "approve", "re", *expect(database_url, "re"))
    assert again.exit_code == 4 and "alice is not a member of finance (carol, dave, erin), which decides stage 1 now" in flat(again.output)
    carol = signoff("carol", "approve", "re", *expect(database_url, "re"))
    assert carol.exit_code == 0 and "approved stage 1/2 (finance)" in flat(carol.output), carol.output


# --- each stage's own deadline, stage 1 included --------------------------------------------------


def test_stage_one_waits_its_own_deadline_and_its_expiry_ends_the_chain(signoff, server, pool, database_url, tmp_path, with_roles, make_context):
    from datetime import datetime, timezone

    from runtime.thread_runner import expire_due
    from tests.scripted import scripted_registry

    path = tmp_path / "quick.toml"
    path.write_text(POLICY.replace('{ role = "support-lead", above = 100 }', '{ role = "support-lead", above = 100, deadline_hours = 2 }'), encoding="utf-8")
    assert signoff("root", "policy", "load", str(path)).exit_code == 0
    started = datetime.now(timezone.utc)
    ask(server, signoff, "1021", "noah.kim@example.com", "q1")
    with pool.connection() as conn:
        deadline = conn.execute("SELECT deadline FROM threads WHERE thread_id = 'q1'").fetchone()["deadline"]
    assert timedelta(hours=2) <= deadline - started < timedelta(hours=2, minutes=5), "stage 1's deadline_hours, not the thread's 24"
    shown = signoff("x", "show", "q1")
    assert f"until {deadline:%Y-%m-%d %H:%M}" in flat(shown.output)
    stage = json.loads(signoff("x", "pending", "--json").output)["threads"][0]["stage"]
    assert (stage["number"], stage["deadline_hours"]) == (1, 2.0) and stage["deadline"] == deadline.isoformat()

    def expire_at(moment):
        return expire_due(pool, make_context(scripted_registry([]), clock=lambda: moment), lambda event: None)

    assert expire_at(deadline - timedelta(seconds=1)) == [] and count_rows(pool, "approvals") == 0
    assert [stop.thread_id for stop in expire_at(deadline + timedelta(seconds=1))] == ["q1"]
    with pool.connection() as conn:
        decided = conn.execute("SELECT actor, detail FROM audit_events WHERE thread_id = 'q1' AND kind = 'decision_expired'").fetchone()
    assert decided["actor"] == "signoff (deadline)"
    assert (decided["detail"]["stage"], decided["detail"]["of"], decided["detail"]["role"]) == (1, 2, "support-lead")
    assert count_rows(pool, "payment_operations") == 0, "an expired stage ends the chain like a rejection: nothing moves"
    late = signoff("alice", "approve", "q1", "--expect", stage["deadline"][:12])
    assert late.exit_code == 4 and "not waiting at a gate" in late.output, late.output


def test_a_later_stage_expiry_names_its_stage(signoff, server, pool, database_url, with_roles, make_context):
    from runtime.thread_runner import expire_due
    from tests.scripted import scripted_registry

    ask(server, signoff, "1021", "noah.kim@example.com", "q2")
    assert signoff("alice", "approve", "q2", *expect(database_url, "q2")).exit_code == 0
    with pool.connection() as conn:
        deadline = conn.execute("SELECT deadline FROM threads WHERE thread_id = 'q2'").fetchone()["deadline"]
    assert json.loads(signoff("x", "show", "q2", "--json").output)["stage"]["deadline"] == deadline.isoformat()
    expire_due(pool, make_context(scripted_registry([]), clock=lambda: deadline + timedelta(seconds=1)), lambda event: None)
    with pool.connection() as conn:
        detail = conn.execute("SELECT detail FROM audit_events WHERE thread_id = 'q2' AND kind = 'decision_expired'").fetchone()["detail"]
    assert (detail["stage"], detail["role"], detail["approved_by"]) == (2, "finance", [])


# --- what pending/show say comes from the policy a decision applies ------------------------------------


def test_pending_and_show_follow_a_newly_loaded_policy(signoff, server, pool, database_url, tmp_path, with_roles):
    ask(server, signoff, "1042", "maya.lopez@example.com", "pb")  # 149 USD: support-lead under POLICY
    assert "waits for stage 1/1 support-lead (1 of alice, bob)" in flat(signoff("x", "pending").output)
    other = tmp_path / "b.toml"
    other.write_text(POLICY.replace('{ role = "support-lead", above = 100 }', '{ role = "finance", above = 100 }')
                     .replace('{ role = "finance", above = 1000, quorum = 2, deadline_hours = 48 }', '{ role = "support-lead", above = 1000 }'),
                     encoding="utf-8")
    assert signoff("root", "policy", "load", str(other)).exit_code == 0
    listed = flat(signoff("x", "pending").output)
    assert "waits for stage 1/1 finance (1 of carol, dave, erin)" in listed and "support-lead" not in listed
    assert "approval needed: stage 1/1 finance (1 of carol, dave, erin)" in flat(signoff("x", "show", "pb").output)
    assert json.loads(signoff("x", "pending", "--json").output)["threads"][0]["stage"]["role"] == "finance"
    # ... which is what a decision applies
    refused = signoff("alice", "approve", "pb", *expect(database_url, "pb"))
    assert refused.exit_code == 4 and "alice is not a member of finance" in refused.output


# --- the stage in --json ----------------------------------------------------------------------------


def test_show_and_pending_json_carry_the_waiting_stage(signoff, server, pool, database_url, with_roles):
    ask(server, signoff, "1021", "noah.kim@example.com", "js")
    assert signoff("alice", "approve", "js", *expect(database_url, "js")).exit_code == 0
    assert signoff("carol", "approve", "js", *expect(database_url, "js")).exit_code == 0
    with pool.connection() as conn:
        deadline = conn.execute("SELECT deadline FROM threads WHERE thread_id = 'js'").fetchone()["deadline"]
    wanted = {"number": 2, "of": 2, "name": "finance", "role": "finance", "needed": 2, "members": ["carol", "dave", "erin"],
              "approved_by": ["carol"], "deadline": deadline.isoformat(), "deadline_hours": 48.0}
    assert json.loads(signoff("x", "show", "js", "--json").output)["stage"] == wanted
    assert json.loads(signoff("x", "pending", "--json").output)["threads"][0]["stage"] == wanted


# --- currency: the thresholds are in one ------------------------------------------------------------


def test_an_amount_in_another_currency_needs_every_stage(signoff, server, pool, database_url, tmp_path, with_roles):
    ask(server, signoff, "1003", "zoe.ivanova@example.com", "gbp")  # 49.00 GBP; the policy's thresholds are USD
    shown = flat(signoff("x", "show", "gbp").output)
    assert "refund(1003, 49.00, GBP)" in shown and "approval needed: stage 1/2 support-lead" in shown, shown
    assert "every stage: the amount is in GBP, the policy's thresholds in USD" in shown
    assert signoff("alice", "approve", "gbp", *expect(database_url, "gbp")).exit_code == 0
    assert "waits for stage 2/2 finance" in flat(signoff("x", "pending").output), "49 GBP is not under 100 of another currency"
    # a policy whose thresholds are in GBP compares them
    gbp = tmp_path / "gbp.toml"
    gbp.write_text(in_currency("GBP"), encoding="utf-8")
    assert signoff("root", "policy", "load", str(gbp)).exit_code == 0
    assert "stage 1/1 review" in flat(signoff("x", "show", "gbp").output)
    assert json.loads(signoff("x", "policy", "show", "--json").output)["currency"] == "GBP"


def test_the_policy_currency_in_the_chain():
    usd = parse_policy(POLICY, "t")
    assert [s.name for s in usd.chain("support", "review", 8_00, "USD")] == ["review"]
    assert [s.name for s in usd.chain("support", "review", 8_00, "EUR")] == ["support-lead", "finance"]
    assert [s.name for s in DEFAULT.chain("support", "review", 1, "JPY")] == ["support-lead", "finance"]
    assert [s.name for s in parse_policy(in_currency("EUR"), "t").chain("support", "review", 8_00, "EUR")] == ["review"]
    with pytest.raises(PolicyError, match="three-letter code"):
        parse_policy(in_currency("dollars"), "t")


def test_a_stage_approval_that_fails_to_commit_notifies_nobody(signoff, server, pool, database_url, with_roles, monkeypatch):
    """The next stage's notification commits with the stage approval or not at all: a process
    that dies (here: fails) before the approval commits leaves no notification of a stage that
    never began, and the approval given again queues it once."""
    ask(server, signoff, "1021", "noah.kim@example.com", "nt")

    def stage_notes():
        with pool.connection() as conn:
            return conn.execute("SELECT count(*) AS n FROM notifications WHERE thread_id = 'nt' AND visit LIKE '%%:stage2'").fetchone()["n"]

    def dies(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr("checkpoint.approval_chain._note_waiting", dies)
    assert signoff("alice", "approve", "nt", *expect(database_url, "nt")).exit_code != 0
    assert count_rows(pool, "stage_approvals") == 0 and stage_notes() == 0
    monkeypatch.undo()
    assert signoff("alice", "approve", "nt", *expect(database_url, "nt")).exit_code == 0
    assert signoff("alice", "approve", "nt", *expect(database_url, "nt")).exit_code == 0  # again: nothing new
    assert stage_notes() == 1, "the next stage announced once (fanned out to the channels where it is delivered)"
