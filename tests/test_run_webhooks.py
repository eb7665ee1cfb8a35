"""A LangGraph API run's webhook, through the notification outbox: LangGraph's own client
against a real `signoff serve` (and workers), local receivers and the embedded PostgreSQL.
Queued with the run's end, posted with the run's JSON, retried with backoff, given up and
shown like any notification; refused at creation when it points at a metadata address."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest
from langgraph_sdk import get_sync_client

from checkpoint.audit import events_of
from tests.http_receiver import HttpReceiver
from tests.procs import CliProcess, table_counts, wait_until
from tests.test_langgraph_sdk import LAPTOPS, _accepts, alice, free_port, procs, spawn, worker  # noqa: F401 - fixtures

BACKOFF = 0.5
ATTEMPTS = 3


@pytest.fixture
def penv(env: dict[str, str]) -> dict[str, str]:
    from tests.procs import ROOT

    return {**env, "PYTHONPATH": str(ROOT), "SIGNOFF_SECRET_KEY": "s" * 40,
            "SIGNOFF_NOTIFY_BACKOFF": str(BACKOFF), "SIGNOFF_NOTIFY_MAX_ATTEMPTS": str(ATTEMPTS)}


def start_serve(penv: dict[str, str], procs: list[CliProcess], **extra: str) -> tuple[CliProcess, str]:
    port = free_port()
    proc = spawn({**penv, **extra}, "serve", "--port", str(port))
    procs.append(proc)
    proc.wait_for(r"serving on http://127\.0\.0\.1:\d+", timeout=60)
    wait_until(lambda: _accepts(port), timeout=20, what="serve to accept connections")
    return proc, f"http://127.0.0.1:{port}/langgraph"


@pytest.fixture
def serve(penv: dict[str, str], procs: list[CliProcess]) -> str:
    return start_serve(penv, procs)[1]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as hook:
        yield hook


def run_rows(pool, run_id: str) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM notifications WHERE channel = 'run_webhook' AND visit = %s", (run_id,)).fetchall()


def test_a_webhook_is_posted_once_through_the_outbox_with_the_runs_json(serve, worker, alice, pool, receiver):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    receiver.script(500)
    thread = client.threads.create()["thread_id"]
    run = client.runs.create(thread, "purchase", input=LAPTOPS, webhook=receiver.url + "/done")
    [posted] = wait_until(lambda: receiver.delivered(), timeout=30, what="the webhook")
    time.sleep(3 * BACKOFF + 1.0)  # time for a second post, were one to come
    assert [r.status for r in receiver.received] == [500, 200] and posted.path.endswith("/done")
    assert {r.headers["Idempotency-Key"] for r in receiver.received} == {run["run_id"]}
    body = posted.json()
    assert body["run_id"] == run["run_id"] and body["thread_id"] == thread and body["status"] == "success"
    assert body["values"]["total_cents"] == 240000 and body["webhook_sent_at"]
    [row] = run_rows(pool, run["run_id"])
    assert (row["thread_id"], row["status"], row["attempts"]) == (thread, "sent", 2)
    [sent] = [e for e in events_of(pool, thread) if e["kind"] == "notification_sent"]
    assert sent["detail"]["channel"] == "run_webhook" and sent["detail"]["run_id"] == run["run_id"]


def test_a_failing_webhook_is_retried_with_backoff_given_up_and_shown_and_never_holds_up_another_runs(
        serve, worker, alice, pool, receiver, cli):
    worker()
    client = get_sync_client(url=serve, api_key=alice)
    with HttpReceiver() as good:
        receiver.script(*[500] * 10)
        bad_thread = client.threads.create()["thread_id"]
        bad = client.runs.create(bad_thread, "purchase", input=LAPTOPS, webhook=receiver.url)
        wait_until(lambda: receiver.received, timeout=30, what="the failing webhook's first attempt")
        good_thread = client.threads.create()["thread_id"]
        fine = client.runs.create(good_thread, "purchase", input=LAPTOPS, webhook=good.url)
        [posted] = wait_until(lambda: good.delivered(), timeout=30, what="the other run's webhook")
        assert posted.json()["run_id"] == fine["run_id"]
        [gave_up] = wait_until(lambda: [r for r in run_rows(pool, bad["run_id"]) if r["status"] == "failed"], timeout=30,
                               what="the failing webhook to be given up")
    assert len(receiver.received) == ATTEMPTS and gave_up["attempts"] == ATTEMPTS and "HTTP 500" in gave_up["last_error"]
    times = [r.at for r in receiver.received]
    waits = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(wait >= 0.5 * BACKOFF * 2 ** n for n, wait in enumerate(waits)), waits  # exponential, with jitter in its upper half
    shown = cli("show", bad_thread)
    assert shown.exit_code == 0 and f"notification run_webhook (ended) failed after {ATTEMPTS} attempts: HTTP 500" in shown.output
    assert any(e["kind"] == "notification_failed" and e["detail"]["run_id"] == bad["run_id"] for e in events_of(pool, bad_thread))


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
                                 "http://[::ffff:169.254.169.254]/"])
def test_a_webhook_to_a_metadata_address_is_refused_422_and_nothing_is_stored(serve, alice, database_url, url):
    client = get_sync_client(url=serve, api_key=alice)
    thread = client.threads.create()["thread_id"]
    before = table_counts(database_url)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.runs.create(thread, "purchase", input=LAPTOPS, webhook=url)
    assert refused.value.response.status_code == 422
    message = refused.value.response.json()["detail"]
    assert "link-local or cloud metadata address" in message and "\n" not in message
    after = table_counts(database_url)
    assert {t: n for t, n in after.items() if n != before[t] and t != "audit_events"} == {}


def test_a_serve_killed_before_posting_a_runs_webhook_posts_it_once_restarted(penv, procs, alice, pool, receiver):
    slow = {"SIGNOFF_NOTIFY_BACKOFF": "6"}  # the retry is due after the first serve is gone
    first, url = start_serve(penv, procs, **slow)
    client = get_sync_client(url=url, api_key=alice)
    receiver.script(500)
    thread = client.threads.create()["thread_id"]
    run = client.runs.create(thread, "purchase", input=LAPTOPS, webhook=receiver.url)
    wait_until(lambda: [r for r in run_rows(pool, run["run_id"]) if r["status"] == "pending" and r["last_error"]], timeout=60,
               what="the first attempt to fail and be recorded")
    first.kill()
    assert receiver.delivered() == []
    start_serve(penv, procs, **slow)  # asked nothing: it delivers the outbox from its start
    [posted] = wait_until(lambda: receiver.delivered(), timeout=30, what="the webhook after the restart")
    assert posted.json()["run_id"] == run["run_id"] and posted.json()["status"] == "success"
    wait_until(lambda: [r["status"] for r in run_rows(pool, run["run_id"])] == ["sent"], timeout=10, what="the row to be marked sent")
    assert len(receiver.delivered()) == 1


def test_a_worker_with_no_notification_setting_delivers_a_queued_runs_webhook_with_no_serve(worker, pool, receiver):
    import uuid

    from checkpoint.notifications import queue_run_webhook_on

    run_id = str(uuid.uuid4())
    with pool.connection() as conn, conn.transaction():
        queue_run_webhook_on(conn, thread_id="t-ended", run_id=run_id, url=receiver.url, body={"run_id": run_id, "status": "success"})
    worker()
    [posted] = wait_until(lambda: receiver.delivered(), timeout=30, what="the worker to post the webhook")
    assert posted.json()["run_id"] == run_id and posted.headers["Idempotency-Key"] == run_id
