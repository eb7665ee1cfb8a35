"""The notification outbox against real local receivers: a webhook and a Slack endpoint that
inject 500s and timeouts, and an SMTP server. One notification per gate visit, event and
channel, whatever is retried; failures back off, give up, and are audited and shown."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from checkpoint import notifications
from checkpoint.audit import events_of
from checkpoint.notifications import NotifyConfig, deliver_due
from checkpoint.signing import read_link, secret_key
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows, expect
from tests.http_receiver import HttpReceiver, SmtpReceiver
from tests.procs import wait_until
from tests.web_fixtures import server  # noqa: F401 - fixtures
from tests.worker_procs import workers  # noqa: F401 - fixture

KEY = "k" * 40
WEBHOOK_SECRET = "shared-with-the-receiver"


@pytest.fixture
def hook():
    with HttpReceiver(hang_seconds=1.5) as receiver:
        yield receiver


@pytest.fixture
def slack():
    with HttpReceiver(hang_seconds=1.5) as receiver:
        yield receiver


@pytest.fixture
def smtp():
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def env(env, hook, slack, smtp):
    return {**env, "SIGNOFF_SECRET_KEY": KEY, "SIGNOFF_NOTIFY_WEBHOOK": hook.url, "SIGNOFF_NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SIGNOFF_NOTIFY_SLACK": slack.url, "SIGNOFF_NOTIFY_SMTP": smtp.url(), "SIGNOFF_PUBLIC_URL": "https://signoff.example.com",
            "SIGNOFF_NOTIFY_TIMEOUT": "0.5", "SIGNOFF_NOTIFY_BACKOFF": "1", "SIGNOFF_NOTIFY_MAX_ATTEMPTS": "4"}


def deliver(pool, env, now: datetime | None = None):
    config = NotifyConfig.from_env(env)
    return deliver_due(pool, config, secret_key(Path(env["SIGNOFF_HOME"]), env), now or datetime.now(timezone.utc), rand=lambda: 1.0)


def fanned_out(pool, env, now: datetime | None = None) -> int:
    """What the delivering process does first: announced visits -> rows per event and channel."""
    return notifications.fan_out(pool, NotifyConfig.from_env(env), now or datetime.now(timezone.utc))


def rows(pool, tid, **where):
    return [r for r in notifications.of_thread(pool, tid) if all(r[k] == v for k, v in where.items())]


def channel_rows(pool, tid, **where):
    """The rows of the channels (not the announcement they were fanned out from)."""
    return [r for r in rows(pool, tid, **where) if r["channel"] != "any"]


def test_a_thread_at_its_gate_sends_one_webhook_one_slack_message_and_one_email(cli, pool, env, hook, slack, smtp):
    assert cli("start", "support", "The sync engine corrupts my notes", "--thread", "n1").exit_code == 0
    assert [(r["channel"], r["status"]) for r in rows(pool, "n1")] == [("any", "pending")]  # the visit, announced once
    # Resuming, re-settling, or a retried run of the same gate visit adds nothing.
    runner = ThreadRunner.for_thread(pool, "n1")
    runner.settle("n1")
    runner.settle("n1")
    assert len(rows(pool, "n1")) == 1

    outcomes = deliver(pool, env)
    assert sorted(o for _, o in outcomes) == ["sent"] * 3
    # the delivering process fanned it out: waiting + reminder + expired, for each of its three channels
    assert len(channel_rows(pool, "n1")) == 9 and len(rows(pool, "n1", event="waiting", status="sent")) == 4
    runner.settle("n1")
    assert len(rows(pool, "n1")) == 10
    assert deliver(pool, env) == []  # nothing more is due now
    row = ThreadRunner.for_thread(pool, "n1").thread_row("n1")
    digest = row.digest

    [webhook] = hook.received
    body = webhook.json()
    assert body["event"] == "waiting" and body["thread_id"] == "n1" and body["graph"] == "support" and body["gate"] == "review"
    assert body["digest"] == digest and "sync engine" in body["summary"]
    signed = hmac.new(WEBHOOK_SECRET.encode(), webhook.headers["X-Signoff-Timestamp"].encode() + b"." + webhook.body, hashlib.sha256).hexdigest()
    assert webhook.headers["X-Signoff-Signature"] == f"v1={signed}"
    assert webhook.headers["Idempotency-Key"] == body["id"]

    [message] = slack.received
    blocks = message.json()["blocks"]
    assert blocks[0]["type"] == "header" and "support / review" in blocks[0]["text"]["text"]
    assert blocks[1]["text"]["type"] == "plain_text" and "sync engine" in blocks[1]["text"]["text"]
    facts = " ".join(field["text"] for field in blocks[2]["fields"])
    assert digest in facts and "Deadline" in facts
    buttons = {b["action_id"]: b["url"] for b in blocks[3]["elements"]}
    assert set(buttons) == {"approve", "reject", "open"}
    key = KEY.encode()
    for action in ("approve", "reject"):
        token = re.fullmatch(r"https://signoff\.example\.com/threads/n1/confirm/(.+)", buttons[action]).group(1)
        link = read_link(key, token, thread_id="n1", now=datetime.now(timezone.utc))
        assert (link.action, link.digest, link.expires) == (action, digest, int(row.deadline.timestamp()))
    assert buttons["approve"] == body["links"]["approve"]

    [mail] = smtp.messages
    assert "Sign-off needed: support / review (n1)" in mail["Subject"]
    text = mail.get_payload(decode=True).decode()
    assert buttons["approve"] in text and buttons["reject"] in text and digest in text
    assert smtp.envelopes == [("signoff@example.com", ["lead@example.com"])]
    assert [e["kind"] for e in events_of(pool, "n1")].count("notification_sent") == 3


def test_500s_and_timeouts_are_retried_with_backoff_under_one_idempotency_key(cli, pool, env, hook, slack):
    hook.script(500, "hang", 503)
    slack.script("hang")
    assert cli("start", "support", "The app crashes", "--thread", "n2").exit_code == 0
    now = datetime.now(timezone.utc)
    fanned_out(pool, env, now)
    waiting = {r["channel"]: r["id"] for r in channel_rows(pool, "n2", event="waiting")}

    assert dict(deliver(pool, env, now)) == {waiting["webhook"]: "retry", waiting["slack"]: "retry", waiting["email"]: "sent"}
    assert deliver(pool, env, now + timedelta(seconds=0.5)) == []  # backing off: 1 s after the first failure
    assert dict(deliver(pool, env, now + timedelta(seconds=1.1))) == {waiting["webhook"]: "retry", waiting["slack"]: "sent"}
    assert deliver(pool, env, now + timedelta(seconds=2.5)) == []  # 2 s after the second
    assert dict(deliver(pool, env, now + timedelta(seconds=3.2))) == {waiting["webhook"]: "retry"}
    assert dict(deliver(pool, env, now + timedelta(seconds=7.5))) == {waiting["webhook"]: "sent"}

    assert [r.status for r in hook.received] == [500, 0, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in hook.received}) == 1
    assert len(hook.delivered()) == 1 and len(slack.delivered()) == 1
    [sent] = rows(pool, "n2", event="waiting", channel="webhook")
    assert (sent["status"], sent["attempts"]) == ("sent", 4)
    assert sent["last_error"] == ""  # cleared once it went through


def test_a_delivery_that_keeps_failing_is_recorded_audited_and_shown(cli, pool, env, hook):
    hook.script(*[500] * 10)
    assert cli("start", "support", "The app crashes", "--thread", "n3").exit_code == 0
    now = datetime.now(timezone.utc)
    for minutes in range(0, 60, 2):
        deliver(pool, env, now + timedelta(minutes=minutes))
    [gave_up] = rows(pool, "n3", event="waiting", channel="webhook")
    assert (gave_up["status"], gave_up["attempts"]) == ("failed", 4)
    assert len(hook.received) == 4
    failed = [e for e in events_of(pool, "n3") if e["kind"] == "notification_failed"]
    assert len(failed) == 1 and failed[0]["detail"]["channel"] == "webhook" and "HTTP 500" in failed[0]["detail"]["error"]

    shown = cli("show", "n3")
    assert shown.exit_code == 0
    assert re.search(r"notification webhook \(waiting\) failed after 4 attempts: HTTP 500", shown.output), shown.output
    assert "notification_failed" in cli("audit", "n3").output


def test_the_reminder_comes_at_its_fraction_of_the_deadline_and_not_after_a_decision(cli, pool, env, database_url, hook):
    assert cli("start", "support", "The app crashes", "--thread", "n4", "--deadline", "10").exit_code == 0
    assert cli("start", "support", "The app crashes", "--thread", "n5", "--deadline", "10").exit_code == 0
    now = datetime.now(timezone.utc)
    deliver(pool, env, now)
    assert [r.json()["event"] for r in hook.received] == ["waiting", "waiting"]
    assert deliver(pool, env, now + timedelta(hours=7)) == []  # the reminder is due at 7.5 h of 10

    assert cli("approve", "n5", *expect(database_url, "n5")).exit_code == 0
    outcomes = dict(deliver(pool, env, now + timedelta(hours=7.6)))
    assert sorted(outcomes.values()) == ["cancelled"] * 3 + ["sent"] * 3  # n4's reminders sent, n5's cancelled
    assert [(r.json()["thread_id"], r.json()["event"]) for r in hook.received[2:]] == [("n4", "reminder")]
    deliver(pool, env, now + timedelta(hours=10.1))  # past the deadline: n5 was decided, so it never expires
    assert [r["status"] for r in rows(pool, "n5", event="expired")] == ["cancelled"] * 3
    assert [r["status"] for r in rows(pool, "n4", event="expired")] == ["pending"] * 3  # not expired yet: looked at again later


def test_an_expired_gate_is_announced_once_it_has_expired(cli, pool, env, hook):
    assert cli("start", "support", "The app crashes", "--thread", "n6", "--deadline", "0.0002").exit_code == 0
    deliver(pool, env)
    [expired_hook] = rows(pool, "n6", event="expired", channel="webhook")
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    # Due at the deadline, but the gate has not expired yet: not sent, looked at again later.
    assert dict(deliver(pool, env, later))[expired_hook["id"]] == "later"
    # the deadline (0.72 s) passes; `expire` applies it
    wait_until(lambda: cli("expire").exit_code == 0 and ThreadRunner.for_thread(pool, "n6").thread_row("n6").status == "finished",
               timeout=20, what="n6 to expire")
    assert dict(deliver(pool, env, later + timedelta(minutes=1)))[expired_hook["id"]] == "sent"
    assert [r.json()["event"] for r in hook.delivered()] == ["waiting", "expired"]


def test_the_run_queues_its_notifications_whatever_its_own_process_has_configured(cli, pool, env, hook, slack, smtp):
    """The process that reaches the gate (a terminal, or `serve` recording an approval) may
    have no SIGNOFF_NOTIFY_* at all, or a broken one: the visit is queued all the same, and the
    process that delivers sends it with its own settings."""
    from typer.testing import CliRunner

    from cli import app

    bare = {k: v for k, v in env.items() if not k.startswith("SIGNOFF_NOTIFY_")}
    broken = {**env, "SIGNOFF_NOTIFY_WEBHOOK_SECRET": ""}
    for tid, own in (("n7", bare), ("n8", broken)):
        result = CliRunner().invoke(app, ["start", "support", "The app crashes", "--thread", tid], env=own)
        assert result.exit_code == 0, result.output
        assert ThreadRunner.for_thread(pool, tid).thread_row(tid).status == "waiting"
    deliver(pool, env)
    assert sorted(r.json()["thread_id"] for r in hook.delivered()) == ["n7", "n8"]
    assert len(slack.delivered()) == 2 and len(smtp.messages) == 2
    assert [e for e in events_of(pool, "n8") if e["kind"] == "notification_failed"] == []


def test_the_summary_cannot_inject_slack_markup_or_mail_headers(pool, env):
    config = NotifyConfig.from_env(env)
    row = {"thread_id": "x1", "visit": "v", "event": "waiting", "channel": "slack",
           "facts": {"graph": "support", "gate": "review", "summary": "hi <!channel>\nBcc: evil@example.com\x1b[2J",
                     "digest": "abc", "deadline": datetime.now(timezone.utc).isoformat()}}
    from nodes.notify import SmtpTarget, email_message, slack_message

    note = notifications.render(config, KEY.encode(), row)
    assert "\n" not in note.summary and "\x1b" not in note.summary
    assert slack_message(note)["blocks"][1]["text"]["type"] == "plain_text"
    message = email_message(SmtpTarget.parse(env["SIGNOFF_NOTIFY_SMTP"]), note)
    assert message["Bcc"] is None and "\n" not in message["Subject"]


def test_slack_gets_customer_text_only_as_plain_text_and_escapes_its_fallback_text():
    planted = "Refund now <!channel> <http://evil.example/pay|Open Signoff to approve> & thanks"
    row = {"thread_id": "x2", "visit": "v", "event": "waiting", "channel": "slack",
           "facts": {"graph": "support", "gate": "review", "summary": planted, "digest": "abc123def456",
                     "deadline": datetime.now(timezone.utc).isoformat()}}
    from nodes.notify import slack_message

    message = slack_message(notifications.render(NotifyConfig(), KEY.encode(), row))

    def text_objects(node):
        if isinstance(node, dict):
            if "type" in node and isinstance(node.get("text"), str):
                yield node
            for value in node.values():
                yield from text_objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from text_objects(value)

    assert {obj["type"] for obj in text_objects(message["blocks"])} == {"plain_text"}
    assert planted in message["blocks"][1]["text"]["text"]  # plain_text shows it exactly as written
    fallback = message["text"]
    assert "<" not in fallback and ">" not in fallback
    assert "&lt;!channel&gt; &lt;http://evil.example/pay|Open Signoff to approve&gt; &amp; thanks" in fallback


def test_a_worker_delivers_the_outbox_retrying_a_failing_receiver(pool, env, hook, slack, smtp, workers):
    from tests.test_worker import decide
    from tests.worker_procs import submit

    hook.script(500)  # the first attempt fails; the worker retries it 1 s later
    workers("--concurrency", "2")
    submit(pool, "support", "nw1", "The sync engine corrupts my notes", email="a@example.com")
    wait_until(lambda: len(hook.delivered()) == 1 and len(slack.delivered()) == 1 and len(smtp.messages) == 1, timeout=60,
               what="the worker to deliver the notifications")
    decide(pool, "nw1")
    wait_until(lambda: ThreadRunner.for_thread(pool, "nw1").thread_row("nw1").status == "finished", timeout=30, what="nw1 to finish")
    assert [r.status for r in hook.received] == [500, 200]
    assert [(r["event"], r["status"]) for r in rows(pool, "nw1", channel="webhook")] == [("waiting", "sent"), ("expired", "pending"), ("reminder", "pending")]
    assert count_rows(pool, "outbox", thread_id="nw1") == 1


def test_a_row_that_cannot_be_sent_fails_alone_is_retried_to_its_limit_then_failed_and_audited(cli, pool, env, slack, smtp):
    """A webhook URL httpx refuses (InvalidURL) and a mail sender with a line break (the mail
    library's ValueError): each of those rows fails on its own, the Slack row claimed in the
    same pass goes out, and the bad rows end 'failed' at exactly their limit, audited."""
    bad = {**env, "SIGNOFF_NOTIFY_WEBHOOK": "http://127.0.0.1:80a/hook",
           "SIGNOFF_NOTIFY_SMTP": smtp.url(sender="signoff@example.com%0d%0aBcc:%20evil@example.com")}
    assert cli("start", "support", "The app crashes", "--thread", "nb").exit_code == 0
    now = datetime.now(timezone.utc)
    first = dict(deliver(pool, bad, now))
    waiting = {r["channel"]: r["id"] for r in channel_rows(pool, "nb", event="waiting")}
    assert first == {waiting["slack"]: "sent", waiting["webhook"]: "retry", waiting["email"]: "retry"}
    assert len(slack.delivered()) == 1 and smtp.messages == []
    for minutes in range(1, 40):
        deliver(pool, bad, now + timedelta(minutes=minutes))
    for channel, says in (("webhook", "InvalidURL"), ("email", "ValueError")):
        [row] = channel_rows(pool, "nb", event="waiting", channel=channel)
        assert (row["status"], row["attempts"]) == ("failed", 4), row
        assert says in row["last_error"]
    failed = sorted(e["detail"]["channel"] for e in events_of(pool, "nb") if e["kind"] == "notification_failed")
    assert failed == ["email", "webhook"]


def test_a_row_whose_last_attempt_was_cut_short_is_failed_not_tried_past_its_limit(cli, pool, env, hook):
    assert cli("start", "support", "The app crashes", "--thread", "nc").exit_code == 0
    now = datetime.now(timezone.utc)
    fanned_out(pool, env, now)
    [row] = channel_rows(pool, "nc", event="waiting", channel="webhook")
    with pool.connection() as conn:  # a process died mid-send at the fourth and last attempt; its lease ran out
        conn.execute("UPDATE notifications SET attempts = 4, last_error = 'HTTP 500: injected' WHERE id = %s", (row["id"],))
    assert dict(deliver(pool, env, now))[row["id"]] == "failed"
    [after] = channel_rows(pool, "nc", event="waiting", channel="webhook")
    assert (after["status"], after["attempts"]) == ("failed", 4)
    assert hook.received == []


def test_a_hanging_receiver_costs_a_pass_one_timeout_and_holds_up_no_other_channel(cli, pool, env, hook, slack, smtp):
    hook.hang_seconds = 3.0
    hook.script(*["hang"] * 4)
    for n in range(4):
        assert cli("start", "support", f"The app crashes ({n})", "--thread", f"nh{n}").exit_code == 0
    import time

    started = time.monotonic()
    outcomes = deliver(pool, env)
    took = time.monotonic() - started
    assert sorted(o for _, o in outcomes) == ["retry"] * 4 + ["sent"] * 8
    assert len(slack.delivered()) == 4 and len(smtp.messages) == 4
    assert took < 0.5 * 4, f"one pass took {took:.1f}s: the hanging webhook rows were waited for one after another"
