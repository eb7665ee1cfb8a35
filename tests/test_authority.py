"""Who acts, and who may: the CLI's actor is the owner of the token in SIGNOFF_TOKEN or the OS
login, never a typed name; the requester of a refund never approves it by any route (CLI,
token, inbox, a policy change); tokens and policies are administered by the policy's admins,
audited, and every policy load is kept; approvals count against the policy in force when
they are counted."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from cli import app
from tests.conftest import count_rows, expect
from tests.fault_server import FaultServer, ok
from tests.refund_fixtures import flat
from web.app import WebContext, create_app

POLICY = (Path(__file__).resolve().parents[1] / "examples" / "signoff.toml").read_text(encoding="utf-8")
KEY = b"k" * 40


@pytest.fixture
def server():
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "billing"}'))
        yield server


@pytest.fixture
def signoff(env, monkeypatch):
    """`signoff(user, *args, token=None)`: the CLI run by that OS login, with SIGNOFF_TOKEN
    set to `token` when given."""
    runner = CliRunner()

    def invoke(user: str, *args: str, token: str | None = None, **extra: str | None):
        monkeypatch.setattr("checkpoint.identity.os_user", lambda: user)
        return runner.invoke(app, list(args), env={**env, "SIGNOFF_TOKEN": token, **extra})

    return invoke


def mint(signoff, admin: str, name: str) -> str:
    """`signoff token create NAME` run by `admin`; the token it printed."""
    created = signoff(admin, "token", "create", name)
    assert created.exit_code == 0, created.output
    return re.search(r"sgn_\S+", created.stdout).group(0)


def mint_as(signoff, token: str, name: str) -> str:
    """`signoff token create NAME` run through a reviewer token; the token it printed."""
    created = signoff("x", "token", "create", name, token=token)
    assert created.exit_code == 0, created.output
    return re.search(r"sgn_\S+", created.stdout).group(0)


def load(signoff, tmp_path, user: str, text: str, name: str = "signoff.toml", token: str | None = None):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return signoff(user, "policy", "load", str(path), token=token)


@pytest.fixture
def with_roles(signoff, tmp_path, cli):
    assert cli("orders", "load").exit_code == 0
    assert load(signoff, tmp_path, "root", POLICY).exit_code == 0


def ask(server, signoff, order: str, email: str, tid: str, user: str, token: str | None = None):
    server.rule("Extract the refund request", ok(f'{{"order_id": "{order}", "amount": null}}'))
    result = signoff(user, "start", "support", f"Please refund order {order}", "--email", email, "--thread", tid, token=token)
    assert result.exit_code == 0, result.output
    return result


def api(pool):
    return TestClient(create_app(WebContext(pool=pool, key=KEY, public_url="http://127.0.0.1:8321")), base_url="http://127.0.0.1",
                      follow_redirects=False)


def decided(pool, tid: str) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        return [(r["decision"], r["actor"]) for r in conn.execute("SELECT decision, actor FROM approvals WHERE thread_id = %s", (tid,))]


def stage_approvers(pool, tid: str) -> list[str]:
    with pool.connection() as conn:
        return [r["actor"] for r in conn.execute("SELECT actor FROM stage_approvals WHERE thread_id = %s ORDER BY id", (tid,))]


def admin_trail(pool) -> list[tuple[str, str, dict]]:
    with pool.connection() as conn:
        return [(r["kind"], r["actor"], r["detail"]) for r in conn.execute(
            "SELECT kind, actor, detail FROM audit_events WHERE thread_id = '-' AND kind <> 'http_refused' ORDER BY id")]


# --- the requester never approves their own request ---------------------------------------------


def test_a_token_the_requester_mints_after_the_request_cannot_approve_it(signoff, server, pool, database_url, with_roles):
    """root starts a refund, then revokes bob's token and mints a new one: approving as bob over
    the API is refused, nothing is recorded, and the audit names root as the minter."""
    mint(signoff, "root", "bob")
    ask(server, signoff, "1042", "maya.lopez@example.com", "own", user="root")
    assert signoff("root", "token", "revoke", "bob").exit_code == 0
    fresh = mint(signoff, "root", "bob")
    with api(pool) as client:
        answer = client.post("/api/threads/own/approve", json={"expect": expect(database_url, "own")[1]},
                             headers={"Authorization": f"Bearer {fresh}"})
    assert answer.status_code == 409, answer.text
    assert "created by root, who requested this refund, after the request" in answer.json()["error"]
    assert decided(pool, "own") == [] and stage_approvers(pool, "own") == [] and count_rows(pool, "payment_operations") == 0
    assert [(kind, actor, detail["name"]) for kind, actor, detail in admin_trail(pool) if kind.startswith("token_")] == [
        ("token_created", "root", "bob"), ("token_revoked", "root", "bob"), ("token_created", "root", "bob")]


def test_such_a_token_is_refused_from_the_inbox_and_the_command_line_too(signoff, server, pool, database_url, with_roles):
    ask(server, signoff, "1042", "maya.lopez@example.com", "own2", user="root")
    fresh = mint(signoff, "root", "bob")
    digest = expect(database_url, "own2")[1]
    by_cli = signoff("anyone", "approve", "own2", "--expect", digest, token=fresh)
    assert by_cli.exit_code == 4 and "created by root, who requested this refund" in flat(by_cli.output), by_cli.output
    with api(pool) as browser:
        form = browser.get("/login?next=/inbox")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert browser.post("/login", data={"token": fresh, "csrf": csrf, "next": "/inbox"}).status_code == 303
        page = browser.get("/threads/own2")
        posted = browser.post("/threads/own2/approve", data={"csrf": re.search(r'name="csrf" value="([^"]+)"', page.text).group(1),
                                                              "expect": digest})
    assert posted.status_code == 409 and "created by root, who requested this refund" in posted.text
    assert decided(pool, "own2") == [] and stage_approvers(pool, "own2") == []


def test_a_policy_the_requester_loads_after_the_request_does_not_apply_to_it(signoff, server, pool, database_url, tmp_path, with_roles):
    """root (an administrator) requests 1,499 USD, then loads a policy that would let anyone
    approve it alone: their own request keeps the policy it was made under; others get the new one."""
    ask(server, signoff, "1021", "noah.kim@example.com", "mine", user="root")
    lax = POLICY.replace("above = 100 }", "above = 5000 }").replace("above = 1000,", "above = 9000,")
    assert load(signoff, tmp_path, "root", lax, "lax.toml").exit_code == 0
    assert "approval needed: stage 1/2 support-lead (1 of alice, bob)" in flat(signoff("x", "show", "mine").output)
    outsider = signoff("sam", "approve", "mine", *expect(database_url, "mine"))
    assert outsider.exit_code == 4 and "sam is not a member of support-lead" in outsider.output
    assert decided(pool, "mine") == []
    ask(server, signoff, "1021", "noah.kim@example.com", "theirs", user="mia")
    assert "approval needed: stage 1/1 review" in flat(signoff("x", "show", "theirs").output), "the new policy applies to others"


def test_what_is_done_through_a_token_the_requester_minted_counts_as_their_own(signoff, server, pool, database_url, tmp_path, with_roles):
    """root requests, mints a deputy's token and makes the deputy an administrator; what the
    deputy then loads or mints is root's doing: it never helps root's request."""
    mint(signoff, "root", "bob")
    ask(server, signoff, "1021", "noah.kim@example.com", "laundered", user="root")
    deputy = mint(signoff, "root", "deputy")
    assert load(signoff, tmp_path, "root", 'admins = ["root", "deputy"]\n' + POLICY, "deputy.toml").exit_code == 0
    lax = 'admins = ["root", "deputy"]\n' + POLICY.replace("above = 100 }", "above = 5000 }").replace("above = 1000,", "above = 9000,")
    assert load(signoff, tmp_path, "x", lax, "lax.toml", token=deputy).exit_code == 0
    assert "approval needed: stage 1/2 support-lead (1 of alice, bob)" in flat(signoff("x", "show", "laundered").output)
    assert signoff("x", "token", "revoke", "bob", token=deputy).exit_code == 0
    bob = mint_as(signoff, deputy, "bob")
    with api(pool) as client:
        answer = client.post("/api/threads/laundered/approve", json={"expect": expect(database_url, "laundered")[1]},
                             headers={"Authorization": f"Bearer {bob}"})
    assert answer.status_code == 409 and "created by root, who requested this refund" in answer.json()["error"], answer.text
    assert stage_approvers(pool, "laundered") == [] and decided(pool, "laundered") == []


def test_a_chain_a_policy_change_completes_is_not_closed_by_its_requester(signoff, server, pool, database_url, tmp_path, with_roles):
    ask(server, signoff, "1021", "noah.kim@example.com", "done", user="root")
    digest = expect(database_url, "done")
    assert signoff("alice", "approve", "done", *digest).exit_code == 0
    assert signoff("carol", "approve", "done", *digest).exit_code == 0  # finance: 1 of 2
    # an administrator other than the requester lowers finance's quorum: the chain is complete
    assert load(signoff, tmp_path, "root", 'admins = ["ops"]\n' + POLICY, "admins.toml").exit_code == 0
    assert load(signoff, tmp_path, "ops", 'admins = ["ops"]\n' + POLICY.replace("quorum = 2", "quorum = 1"), "q1.toml").exit_code == 0
    own = signoff("root", "approve", "done", *digest)
    assert own.exit_code == 4 and "root started this thread and may not decide its approval" in own.output
    assert decided(pool, "done") == []
    closed = signoff("carol", "approve", "done", *digest)
    assert closed.exit_code == 0 and decided(pool, "done") == [("approved", "carol")], closed.output


# --- approvals count against the policy in force when counted -------------------------------------


def test_a_member_removed_from_the_policy_no_longer_counts(signoff, server, pool, database_url, tmp_path, with_roles, cli):
    """5,000 USD: alice approves stage 1, carol gives finance 1 of 2; a policy without carol is
    loaded; dave's one approval does not complete the quorum."""
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,email,amount,currency,ordered_at,status\n"
                      f"2001,lena.berg@example.com,5000.00,USD,{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ},paid\n", encoding="utf-8")
    assert cli("orders", "load", str(orders)).exit_code == 0
    ask(server, signoff, "2001", "lena.berg@example.com", "big", user="mia")
    digest = expect(database_url, "big")
    assert signoff("alice", "approve", "big", *digest).exit_code == 0
    assert signoff("carol", "approve", "big", *digest).exit_code == 0
    without_carol = POLICY.replace('finance = ["carol", "dave", "erin"]', 'finance = ["dave", "erin"]')
    assert load(signoff, tmp_path, "root", without_carol, "no-carol.toml").exit_code == 0
    dave = signoff("dave", "approve", "big", *digest)
    assert dave.exit_code == 0 and "waiting for stage 2/2 finance (2 of dave, erin, 1 so far)" in flat(dave.output), dave.output
    assert decided(pool, "big") == [] and count_rows(pool, "payment_operations") == 0
    erin = signoff("erin", "approve", "big", *digest)
    assert erin.exit_code == 0 and "refunded 5000.00 USD" in flat(erin.output), erin.output


def test_a_member_whose_approval_no_longer_counts_may_approve_again_in_their_new_role(signoff, server, pool, database_url, tmp_path, with_roles):
    ask(server, signoff, "1021", "noah.kim@example.com", "moved", user="mia")
    digest = expect(database_url, "moved")
    assert signoff("alice", "approve", "moved", *digest).exit_code == 0
    assert signoff("carol", "approve", "moved", *digest).exit_code == 0  # finance, 1 of 2
    moved = (POLICY.replace('support-lead = ["alice", "bob"]', 'support-lead = ["alice", "bob", "carol"]')
             .replace('{ role = "finance", above = 1000, quorum = 2, deadline_hours = 48 }', '{ role = "support-lead", above = 1000, quorum = 2 }'))
    assert load(signoff, tmp_path, "root", moved, "moved.toml").exit_code == 0
    again = signoff("carol", "approve", "moved", *digest)
    assert again.exit_code == 0 and "waiting for stage 2/2 support-lead (2 of alice, bob, carol, 1 so far)" in flat(again.output), again.output
    assert stage_approvers(pool, "moved") == ["alice", "carol"]
    done = signoff("bob", "approve", "moved", *digest)
    assert done.exit_code == 0 and decided(pool, "moved") == [("approved", "bob")], done.output


# --- who acts on the command line ----------------------------------------------------------------------


def test_the_command_line_acts_as_the_token_owner_else_the_os_login(signoff, server, pool, database_url, with_roles):
    alice = mint(signoff, "root", "alice")
    ask(server, signoff, "1042", "maya.lopez@example.com", "t1", user="mia")
    ask(server, signoff, "1042", "maya.lopez@example.com", "t2", user="mia", token=alice)
    queued = signoff("mia", "start", "support", "Please refund order 1042", "--thread", "t3", "--detach", token=alice)
    assert queued.exit_code == 0, queued.output
    with pool.connection() as conn:
        requesters = {r["thread_id"]: r["requested_by"] for r in conn.execute("SELECT thread_id, requested_by FROM threads")}
    assert requesters == {"t1": "mia", "t2": "alice", "t3": "alice"}, "the token's owner requests, also through a worker's queue"
    approved = signoff("carol", "approve", "t1", *expect(database_url, "t1"), token=alice)  # the OS login is carol; the token is alice's
    assert approved.exit_code == 0 and decided(pool, "t1") == [("approved", "alice")], approved.output


@pytest.mark.parametrize("args, extra, says", [
    (("--by", "alice"), {}, "--by no longer chooses who acts"),
    ((), {"SIGNOFF_USER": "alice"}, "SIGNOFF_USER no longer chooses who acts"),
    ((), {"SIGNOFF_TOKEN": "sgn_not-a-token"}, "SIGNOFF_TOKEN is not a live reviewer token"),
])
def test_a_typed_name_or_a_bad_token_is_refused_in_one_line(signoff, server, pool, database_url, with_roles, args, extra, says):
    ask(server, signoff, "1042", "maya.lopez@example.com", "n1", user="mia")
    refused = signoff("bob", "approve", "n1", *expect(database_url, "n1"), *args, **extra)
    assert refused.exit_code == 2 and says in refused.output and len(refused.output.strip().splitlines()) == 1, refused.output
    assert decided(pool, "n1") == [] and stage_approvers(pool, "n1") == []


# --- administration ---------------------------------------------------------------------------------


def test_only_the_named_administrators_create_tokens_and_load_policies(signoff, pool, tmp_path):
    through_token = signoff("root", "token", "create", "carol", token=mint(signoff, "root", "alice"))
    assert through_token.exit_code == 4 and "the local operating-system user, not a reviewer token" in flat(through_token.output)
    assert load(signoff, tmp_path, "root", 'admins = ["ops", "ada"]\n' + POLICY).exit_code == 0
    for refused in (signoff("root", "token", "create", "mallory"), signoff("root", "token", "revoke", "alice"),
                    load(signoff, tmp_path, "root", 'admins = ["root"]\n' + POLICY, "mine.toml")):
        assert refused.exit_code == 4 and "for the administrators the policy names (ops, ada); you act as root" in flat(refused.output), refused.output
    as_another = signoff("ops", "token", "create", "ada")
    assert as_another.exit_code == 4 and "only ada creates a token for ada" in as_another.output
    dropped = load(signoff, tmp_path, "ops", POLICY, "no-admins.toml")
    assert dropped.exit_code == 2 and "keep an `admins = [...]` list" in flat(dropped.output)
    assert [t for t in (r["name"] for r in _tokens(pool))] == ["alice"]
    mint(signoff, "ops", "carol")
    assert [(r["name"], r["created_by"]) for r in _tokens(pool)] == [("alice", "root"), ("carol", "ops")]
    assert "created" in signoff("x", "token", "list").output and "by ops" in signoff("x", "token", "list").output
    assert [(kind, actor) for kind, actor, _ in admin_trail(pool)] == [
        ("token_created", "root"), ("policy_loaded", "root"), ("token_created", "ops")]


def test_every_policy_load_is_kept_as_a_version(signoff, pool, tmp_path):
    assert load(signoff, tmp_path, "root", POLICY).exit_code == 0
    assert load(signoff, tmp_path, "root", POLICY.replace("quorum = 2", "quorum = 3"), "three.toml").exit_code == 0
    history = signoff("x", "policy", "history")
    assert history.exit_code == 0
    lines = [line for line in history.output.splitlines() if line.startswith("version")]
    assert len(lines) == 2 and "by root" in lines[0] and lines[1].endswith("three.toml"), history.output
    shown = signoff("x", "policy", "show").output
    assert "version 2, loaded by root" in flat(shown)
    with pytest.raises(psycopg.errors.RaiseException), pool.connection() as conn:
        conn.execute("UPDATE policy_versions SET loaded_by = 'mallory'")


def _tokens(pool):
    with pool.connection() as conn:
        return conn.execute("SELECT name, created_by FROM reviewer_tokens WHERE revoked_at IS NULL ORDER BY id").fetchall()
