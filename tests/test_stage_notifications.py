"""Notifications for every stage of an approval chain: the next stage's links decide it, its
reminder and expiry notice are dropped once it is decided, and one stage's notices never
outlive the stage (a 1,499 USD refund: support-lead, then 2 of 3 finance within 48 hours)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from checkpoint import notifications, tokens
from checkpoint.notifications import NotifyConfig, deliver_due
from checkpoint.signing import secret_key
from tests.conftest import count_rows, expect
from tests.http_receiver import HttpReceiver
from tests.test_approval_chain import ask, server, signoff, with_roles  # noqa: F401 - fixtures
from web.app import WebContext, create_app

KEY = "k" * 40


@pytest.fixture
def hook():
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def env(env, hook):
    return {**env, "SIGNOFF_SECRET_KEY": KEY, "SIGNOFF_NOTIFY_WEBHOOK": hook.url, "SIGNOFF_NOTIFY_WEBHOOK_SECRET": "s",
            "SIGNOFF_PUBLIC_URL": "https://signoff.example.com", "SIGNOFF_NOTIFY_TIMEOUT": "1"}


def deliver(pool, env, at: datetime) -> dict[int, str]:
    return dict(deliver_due(pool, NotifyConfig.from_env(env), secret_key(Path(env["SIGNOFF_HOME"]), env), at, rand=lambda: 1.0))


def stage_two(pool, tid: str, event: str) -> dict:
    [row] = [r for r in notifications.of_thread(pool, tid) if r["channel"] == "webhook" and r["event"] == event
             and "finance" in hook_summary(pool, r["id"])]
    return row


def hook_summary(pool, nid: int) -> str:
    with pool.connection() as conn:
        return conn.execute("SELECT facts->>'summary' AS s FROM notifications WHERE id = %s", (nid,)).fetchone()["s"]


def sign_in(client: TestClient, token: str) -> None:
    form = client.get("/login?next=/inbox")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert client.post("/login", data={"token": token, "csrf": csrf, "next": "/inbox"}).status_code == 303


@pytest.fixture
def at_stage_two(signoff, server, pool, database_url, env, with_roles):
    """`big` announced, approved by support-lead, its finance stage announced; the time then."""
    ask(server, signoff, "1021", "noah.kim@example.com", "big")
    deliver(pool, env, datetime.now(timezone.utc))  # stage 1 announced
    assert signoff("alice", "approve", "big", *expect(database_url, "big")).exit_code == 0
    now = datetime.now(timezone.utc)
    deliver(pool, env, now)
    return now


def test_the_second_stages_approve_link_decides_that_stage(pool, env, hook, at_stage_two):
    [note] = [r.json() for r in hook.delivered() if "finance" in r.json()["summary"]]
    path = note["links"]["approve"].removeprefix("https://signoff.example.com")
    client = TestClient(create_app(WebContext(pool=pool, key=KEY.encode(), public_url="https://signoff.example.com")),
                        base_url="https://testserver", follow_redirects=False)
    sign_in(client, tokens.create(pool, "carol"))
    page = client.get(path)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post(path, data={"csrf": csrf}).status_code == 303
    assert count_rows(pool, "stage_approvals", thread_id="big", actor="carol", stage=2) == 1


def test_a_stage_decided_gets_no_reminder_and_no_expiry_notice(signoff, pool, database_url, env, hook, at_stage_two):
    now = at_stage_two
    first_stage = [r for r in notifications.of_thread(pool, "big") if r["channel"] == "webhook" and r["event"] != "waiting"]
    assert {r["status"] for r in first_stage if "finance" not in hook_summary(pool, r["id"])} == {"cancelled"}, \
        "stage 1 was approved: its reminder and expiry notice are dropped"
    assert signoff("carol", "approve", "big", *expect(database_url, "big")).exit_code == 0
    assert signoff("dave", "approve", "big", *expect(database_url, "big")).exit_code == 0  # the chain is complete
    reminder, expired = stage_two(pool, "big", "reminder"), stage_two(pool, "big", "expired")
    assert deliver(pool, env, now + timedelta(hours=37))[reminder["id"]] == "cancelled"
    assert deliver(pool, env, now + timedelta(hours=49))[expired["id"]] == "cancelled"
    assert [r.json()["event"] for r in hook.delivered()] == ["waiting", "waiting"]


def test_an_expired_stage_is_announced_once_and_not_looked_at_again(cli, pool, env, hook, at_stage_two):
    now = at_stage_two
    with pool.connection() as conn:  # the finance stage's 48 hours have passed
        conn.execute("UPDATE threads SET deadline = now() - interval '1 second' WHERE thread_id = 'big'")
    assert cli("expire").exit_code == 0
    expired = stage_two(pool, "big", "expired")
    assert deliver(pool, env, now + timedelta(hours=49))[expired["id"]] == "sent"
    assert deliver(pool, env, now + timedelta(hours=50)) == {}
    assert [r.json()["event"] for r in hook.delivered()] == ["waiting", "waiting", "expired"]
