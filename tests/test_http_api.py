"""The HTTP API (`signoff serve`) in-process (Starlette's TestClient), on the real database:
status codes, who decides, the CLI's rules, nothing changed by a refusal, refusals audited;
and with a real worker, a decision made over HTTP is finished there."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from checkpoint import jobs, tokens
from checkpoint.audit import events_of
from runtime.thread_runner import ThreadRunner
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


def anonymous_rows(pool):
    return [e["detail"] for e in events_of(pool, "-") if e["kind"] == "http_refused" and e["actor"] == "anonymous"]


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
    assert after["audit_events"] == before["audit_events"] + 1 + 1 and after["approvals"] == before["approvals"]  # the revoke's audit row, and one refusal row per source and minute
    assert {k: v for k, v in after.items() if k not in ("audit_events", "reviewer_tokens")} == \
           {k: v for k, v in before.items() if k not in ("audit_events", "reviewer_tokens")}
    [row] = anonymous_rows(pool)
    assert (row["source"], row["count"], row["statuses"], row["last_path"]) == ("testclient", 5, {"401": 5}, "/api/threads/h1/approve")
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

    monkeypatch.setattr("runtime.thread_runner.as_state_decision", lost)  # recorded, then writing it into the thread fails
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
        ("/api/threads/h1/approve", {"expect": "000000000000"}, 400, "no such digest '000000000000' for thread h1"),
        ("/api/threads/h1/approve", {"expect": 12}, 400, "expect must be"),
        ("/api/threads/h1/reject", {}, 400, "the feedback is empty"),
        ("/api/threads/h1/reject", {"feedback": "  "}, 400, "the feedback is empty"),
        ("/api/threads/h1/reject", {"feedback": "a\x00b"}, 400, "NUL"),
        ("/api/threads/h1/reject", b'{"feedback": "fix \\ud800 this"}', 400, "the feedback is not valid UTF-8"),  # a lone surrogate
        ("/api/threads/h1/reject", {"feedback": "x" * 70000}, 413, "limit"),
        ("/api/threads/h1/reject", {"handover": "yes"}, 400, "handover must be true or false"),
        ("/api/threads/nope/approve", {"expect": "x"}, 404, "no thread 'nope'"),
    ]
    for path, body, status, says in cases:
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = client.post(path, **sent, headers=bearer(token))
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
    assert [r["status"] for r in refusals(pool, "h1")] == [400, 400, 400, 400, 400, 400, 400, 413, 400, 400, 400]
    assert anonymous_rows(pool)[0]["statuses"] == {"413": 1, "411": 1}  # refused before the token was read

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


def test_a_digest_the_thread_never_had_is_no_such_digest_and_an_earlier_one_has_changed(client, cli, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    for never in ("000000000000", review_digest(database_url, "h2")):  # a typo; another thread's digest
        response = client.post("/api/threads/h1/approve", json={"expect": never}, headers=bearer(token))
        assert response.status_code == 400 and f"no such digest '{never}' for thread h1" in response.json()["error"], response.text
    reviewed = review_digest(database_url, "h1")
    assert cli("reject", "h1", "--feedback", "Name the version that fixes the sync engine").exit_code == 0  # redrafted
    current = review_digest(database_url, "h1")
    assert current != reviewed
    response = client.post("/api/threads/h1/approve", json={"expect": reviewed}, headers=bearer(token))
    assert response.status_code == 412, response.text
    assert f"the content changed since you reviewed it (digest {current}, you expected {reviewed})" in response.json()["error"]
    assert count_rows(pool, "approvals", thread_id="h1", decision="approved") == 0


#: Paths no route can use: NULs, non-UTF-8 bytes, overlong ids, in every place an id or token goes.
HOSTILE_PATHS = ["/api/threads/%00", "/api/threads/h1%00", "/api/threads/%ff%fe", "/api/threads/" + "a" * 5000,
                 "/api/threads/%00/approve", "/threads/%00", "/threads/h1%00/confirm/x%00", "/threads/h1/confirm/%ff.%00",
                 "/threads/%c0%80/confirm/" + "x" * 5000, "/api/threads?status=%00", "/login?next=/%00%0d%0a"]


def test_hostile_paths_get_a_4xx_with_one_line_never_a_500_and_are_audited(ctx, pool, waiting):
    token = tokens.create(pool, "alice")
    with TestClient(create_app(ctx), base_url="http://127.0.0.1", follow_redirects=False) as strict:  # a 500 raises here
        for path in HOSTILE_PATHS:
            for headers in ({}, bearer(token)):
                response = strict.get(path, headers=headers)
                assert response.status_code < 500, (path, response.status_code)
                if response.headers.get("content-type", "").startswith("application/json"):
                    assert "\n" not in response.json()["error"] and response.status_code in (400, 401, 404)
        posted = strict.post("/threads/%00/approve", data={"csrf": "x\x00\u00e9"})
        assert posted.status_code == 401
    refused = [e for e in events_of(pool, "-") if e["kind"] == "http_refused"]
    assert any("\\x00" in str(e["detail"]) for e in refused)  # the NUL is recorded as typed, and the write succeeded


def test_every_response_carries_the_framing_and_content_security_headers(client, pool, waiting):
    token = tokens.create(pool, "alice")
    responses = [client.get("/api/threads", headers=bearer(token)), client.get("/api/threads"), client.get("/login"),
                 client.get("/inbox", follow_redirects=False), client.get("/static/style.css"), client.get("/nope"),
                 client.post("/api/threads/h1/reject", content=b"{" + b" " * (MAX_BODY + 10) + b"}", headers=bearer(token))]
    for response in responses:
        headers = response.headers
        assert (headers["x-frame-options"], headers["x-content-type-options"], headers["referrer-policy"]) == ("DENY", "nosniff", "no-referrer")
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert "script-src 'self';" in policy and "unsafe-eval" not in policy  # only the server's own script files run
    assert [r.status_code for r in responses] == [200, 401, 200, 303, 200, 404, 413]


def test_refused_anonymous_requests_are_rate_limited_and_audited_as_one_counted_row(pool, database_url, waiting):
    from tests.web_fixtures import KEY
    from web.app import WebContext
    from web.refusals import RefusalLimit

    now = [datetime.now(timezone.utc)]
    ctx = WebContext(pool=pool, key=KEY, public_url="http://127.0.0.1:8321", clock=lambda: now[0],
                     refusals=RefusalLimit(limit=5, window_seconds=60))
    alice = tokens.create(pool, "alice")
    before = count_rows(pool, "audit_events")
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        answers = [client.get("/api/threads/h1", headers=bearer(f"sgn_guess{n}")).status_code for n in range(200)]
        assert answers == [401] * 5 + [429] * 195
        blocked = client.get("/api/threads", headers=bearer(alice))  # the source is refused, whatever it sends
        assert blocked.status_code == 429 and 0 < int(blocked.headers["Retry-After"]) <= 60
        assert client.post("/login", data={"token": alice}).status_code == 429
        assert count_rows(pool, "audit_events") == before + 1  # 203 requests, one row
        now[0] += timedelta(seconds=61)
        assert client.get("/api/threads", headers=bearer(alice)).status_code == 200
    [row] = [e["detail"] for e in events_of(pool, "-") if e["kind"] == "http_refused"]
    assert row["source"] == "testclient" and row["statuses"]["401"] == 5 and row["statuses"]["429"] >= 1
