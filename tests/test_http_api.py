"""The HTTP API (`signoff serve`) in-process (Starlette's TestClient), on the real database:
status codes, who decides, the CLI's rules, nothing changed by a refusal, refusals audited;
and with a real worker, a decision made over HTTP is finished there."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from checkpoint import jobs, tokens
from checkpoint.audit import events_of
from graphs.runner import ThreadRunner
from tests.conftest import count_rows, review_digest
from tests.procs import table_counts, wait_until
from tests.web_fixtures import ctx, server  # noqa: F401 - fixtures
from tests.worker_procs import workers  # noqa: F401 - fixture
from web.app import MAX_BODY, create_app


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def waiting(cli):
    for tid in ("h1", "h2"):
        assert cli("start", "support", f"The sync engine corrupts my notes ({tid})", "--thread", tid).exit_code == 0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status_of(pool, tid):
    return ThreadRunner.for_thread(pool, tid).thread_row(tid).status


def refusals(pool, tid="-"):
    return [e["detail"] for e in events_of(pool, tid) if e["kind"] == "http_refused"]


def test_missing_wrong_and_revoked_tokens_get_401_change_nothing_and_are_audited(client, pool, database_url, waiting):
    alice = tokens.create(pool, "alice")
    digest = review_digest(database_url, "h1")
    before = table_counts(database_url)
    assert client.get("/api/threads").status_code == 401
    assert client.get("/api/threads", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/api/threads", headers=bearer("sgn_wrong")).status_code == 401
    assert client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(alice + "x")).status_code == 401
    tokens.revoke(pool, "alice")
    response = client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(alice))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert "bad or revoked token" in response.json()["error"]
    after = table_counts(database_url)
    assert after["audit_events"] == before["audit_events"] + 5 and after["approvals"] == before["approvals"]
    assert {k: v for k, v in after.items() if k not in ("audit_events", "reviewer_tokens")} == \
           {k: v for k, v in before.items() if k not in ("audit_events", "reviewer_tokens")}
    assert [r["status"] for r in refusals(pool, "h1")] == [401, 401]
    assert status_of(pool, "h1") == "waiting"


def test_listing_and_reading_a_thread(client, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    listed = client.get("/api/threads?status=waiting", headers=bearer(token)).json()["threads"]
    assert [t["thread_id"] for t in listed] == ["h1", "h2"]
    assert listed[0]["graph"] == "support" and listed[0]["gate"] == "review" and listed[0]["digest"] == review_digest(database_url, "h1")
    assert listed[0]["deadline"] and listed[0]["age_seconds"] >= 0
    assert client.get("/api/threads?status=nope", headers=bearer(token)).status_code == 400

    detail = client.get("/api/threads/h1", headers=bearer(token)).json()
    assert detail["status"] == "waiting" and detail["digest"] == review_digest(database_url, "h1")
    assert "ticket" in detail["review"].lower() or detail["review"]
    assert [s["node"] for s in detail["steps"]][:1] == ["classify"]
    assert detail["decisions"] == [] and detail["audit"][0]["kind"] == "thread_started"
    assert client.get("/api/threads/nope", headers=bearer(token)).status_code == 404
    assert client.get("/api/threads/bad%20id", headers=bearer(token)).status_code == 400


def test_approve_records_the_token_owner_and_queues_the_thread_for_a_worker(client, pool, database_url, waiting):
    token = tokens.create(pool, "Alice Lead")
    digest = review_digest(database_url, "h1")
    response = client.post("/api/threads/h1/approve", json={"expect": digest, "note": "fine", "by": "mallory"}, headers=bearer(token))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["actor"], body["decision"], body["digest"], body["worker_running"]) == ("Alice Lead", "approved", digest, False)
    assert jobs.active_job(pool, "h1")["kind"] == "decision"
    with pool.connection() as conn:
        decided = conn.execute("SELECT actor, decision, note, digest FROM approvals WHERE thread_id = 'h1'").fetchall()
    assert decided == [{"actor": "Alice Lead", "decision": "approved", "note": "fine", "digest": digest}]

    bob = tokens.create(pool, "bob")
    again = client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(bob))
    assert again.status_code == 409 and "already decided by Alice Lead" in again.json()["error"]
    assert refusals(pool, "h1")[-1]["status"] == 409
    assert count_rows(pool, "approvals", thread_id="h1") == 1


def test_a_decision_sent_again_by_its_reviewer_is_told_it_is_recorded_even_after_the_thread_ran_on(client, cli, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    digest = review_digest(database_url, "h1")
    assert client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(token)).status_code == 202
    job = jobs.active_job(pool, "h1")["id"]
    again = client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(token))  # a client retrying after a timeout
    assert again.status_code == 202 and again.json()["already_recorded"] is True and again.json()["job"] == job

    assert cli("resume", "h1").exit_code == 0  # what a worker does with the job
    assert status_of(pool, "h1") == "finished"
    late = client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(token))
    assert late.status_code == 202 and late.json()["already_recorded"] is True, late.text
    assert client.post("/api/threads/h1/reject", json={"feedback": "no"}, headers=bearer(token)).status_code == 409
    assert count_rows(pool, "approvals", thread_id="h1") == 1


def test_a_decision_recorded_before_a_failure_is_answered_as_recorded_and_a_worker_applies_it(client, cli, pool, database_url,
                                                                                             waiting, monkeypatch):
    token = tokens.create(pool, "alice")
    digest = review_digest(database_url, "h1")

    def lost(*args, **kwargs):
        raise ConnectionError("the database went away after the commit")

    monkeypatch.setattr("graphs.runner.as_state_decision", lost)  # recorded, then writing it into the thread fails
    response = client.post("/api/threads/h1/approve", json={"expect": digest}, headers=bearer(token))
    assert response.status_code == 202 and response.json()["already_recorded"] is True, response.text
    assert jobs.active_job(pool, "h1")["kind"] == "decision"
    monkeypatch.undo()
    assert cli("resume", "h1").exit_code == 0  # what a worker does with the job: applies the recorded decision
    assert status_of(pool, "h1") == "finished" and count_rows(pool, "approvals", thread_id="h1") == 1


def test_the_cli_rules_hold_over_http(client, ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    before = table_counts(database_url)
    cases = [
        ("/api/threads/h1/approve", {}, 400, "expect"),
        ("/api/threads/h1/approve", {"expect": "000000000000"}, 412, "the content changed since you reviewed it"),
        ("/api/threads/h1/approve", {"expect": 12}, 400, "expect must be"),
        ("/api/threads/h1/reject", {}, 400, "the feedback is empty"),
        ("/api/threads/h1/reject", {"feedback": "  "}, 400, "the feedback is empty"),
        ("/api/threads/h1/reject", {"feedback": "a\x00b"}, 400, "NUL"),
        ("/api/threads/h1/reject", {"feedback": "x" * 70000}, 413, "limit"),
        ("/api/threads/h1/reject", {"handover": "yes"}, 400, "handover must be true or false"),
        ("/api/threads/nope/approve", {"expect": "x"}, 404, "no thread 'nope'"),
    ]
    for path, body, status, says in cases:
        response = client.post(path, json=body, headers=bearer(token))
        assert (response.status_code, says in response.json()["error"]) == (status, True), (path, body, response.text)
    assert client.post("/api/threads/h1/approve", content=b"not json", headers=bearer(token)).status_code == 400
    assert client.post("/api/threads/h1/approve", content=b"[1]", headers=bearer(token)).status_code == 400
    huge = client.post("/api/threads/h1/reject", content=b"{" + b" " * (MAX_BODY + 10) + b"}", headers=bearer(token))
    assert huge.status_code == 413

    def chunks():
        yield b'{"feedback": "x"}'

    assert client.post("/api/threads/h1/reject", content=chunks(), headers=bearer(token)).status_code == 411
    after = table_counts(database_url)
    assert {k: v for k, v in after.items() if k not in ("audit_events", "reviewer_tokens")} == \
           {k: v for k, v in before.items() if k not in ("audit_events", "reviewer_tokens")}
    assert [r["status"] for r in refusals(pool, "h1")] == [400, 412, 400, 400, 400, 400, 413, 400, 400, 400, 413, 411]

    # Past its deadline the gate's default action applies: refused, and a worker is asked to expire it.
    ctx.clock = lambda: datetime.now(timezone.utc) + timedelta(days=2)
    late = client.post("/api/threads/h2/approve", json={"expect": review_digest(database_url, "h2")}, headers=bearer(token))
    assert late.status_code == 409 and "the deadline passed" in late.json()["error"]
    assert jobs.active_job(pool, "h2")["kind"] == "deadline" and count_rows(pool, "approvals", thread_id="h2") == 0


def test_a_hand_over_needs_no_feedback_and_is_recorded_as_one(client, pool, waiting):
    token = tokens.create(pool, "alice")
    assert client.get("/api/threads/h1", headers=bearer(token)).json()["hands_over"] is True
    response = client.post("/api/threads/h1/reject", json={"handover": True}, headers=bearer(token))
    assert response.status_code == 202, response.text
    assert (response.json()["decision"], response.json()["handover"]) == ("rejected", True)
    assert count_rows(pool, "approvals", thread_id="h1", handover=True, note="handed over to a specialist") == 1
    assert jobs.active_job(pool, "h1")["kind"] == "decision"


def test_a_thread_not_at_a_gate_is_409(client, cli, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    assert cli("approve", "h2", "--expect", review_digest(database_url, "h2")).exit_code == 0
    assert status_of(pool, "h2") == "finished"
    response = client.post("/api/threads/h2/reject", json={"feedback": "no"}, headers=bearer(token))
    assert response.status_code == 409 and "h2 is not waiting at a gate" in response.json()["error"]


def test_a_decision_over_http_is_finished_by_a_worker(client, pool, database_url, waiting, workers):
    token = tokens.create(pool, "alice")
    workers("--concurrency", "2")
    response = client.post("/api/threads/h1/reject", json={"feedback": "Be more specific about the sync fix"}, headers=bearer(token))
    assert response.status_code == 202 and response.json()["worker_running"] is True
    # a reject redrafts: the worker brings the thread back to its gate, with a new digest
    wait_until(lambda: jobs.active_job(pool, "h1") is None and status_of(pool, "h1") == "waiting"
               and count_rows(pool, "jobs", thread_id="h1", status="done") == 1, timeout=30, what="the worker to redraft h1")
    response = client.post("/api/threads/h1/approve", json={"expect": review_digest(database_url, "h1")}, headers=bearer(token))
    assert response.status_code == 202
    wait_until(lambda: status_of(pool, "h1") == "finished", timeout=30, what="the worker to finish h1")
    assert count_rows(pool, "outbox", thread_id="h1") == 1
    with pool.connection() as conn:
        assert [r["actor"] for r in conn.execute("SELECT actor FROM approvals WHERE thread_id = 'h1' ORDER BY id")] == ["alice", "alice"]
