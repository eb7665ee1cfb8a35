"""Decision links and the pages' protections, in-process on the real database: a GET never
decides; only the confirmation page's POST does, with a session and its CSRF token; expired,
reused, tampered and wrong-thread links, and forged or session-less posts, are refused with a
clear page, change nothing, and are audited."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from checkpoint import tokens
from checkpoint.identity import os_user
from checkpoint.audit import events_of
from checkpoint.notifications import NotifyConfig, render
from checkpoint.signing import Link, sign_link
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows
from tests.procs import table_counts
from tests.web_fixtures import KEY, ctx, server  # noqa: F401 - fixtures
from web.app import create_app


def browser(ctx) -> TestClient:
    return TestClient(create_app(ctx), base_url="http://127.0.0.1", follow_redirects=False)


@pytest.fixture
def waiting(cli):
    for tid in ("w1", "w2"):
        assert cli("start", "support", f"The sync engine corrupts my notes ({tid})", "--thread", tid).exit_code == 0


def links_of(pool, tid: str) -> dict[str, str]:
    """The approve/reject links a notification for the thread's current gate visit carries."""
    runner = ThreadRunner.for_thread(pool, tid)
    snapshot = runner.snapshot(tid)
    row = runner.thread_row(tid)
    from nodes.gates import content_digest

    facts = {"graph": "support", "gate": "review", "summary": row.summary, "deadline": row.deadline.isoformat(),
             "digest": content_digest(runner.spec.review_content(snapshot.values))}
    note = render(NotifyConfig(), KEY, {"thread_id": tid, "visit": snapshot.config["configurable"]["checkpoint_id"],
                                        "event": "waiting", "channel": "slack", "facts": facts})
    return {"approve": note.approve_url.removeprefix(NotifyConfig().public_url), "reject": note.reject_url.removeprefix(NotifyConfig().public_url)}


def sign_in(client: TestClient, token: str) -> None:
    form = client.get("/login?next=/inbox")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    response = client.post("/login", data={"token": token, "csrf": csrf, "next": "/inbox"})
    assert response.status_code == 303 and response.headers["location"] == "/inbox"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def anonymous_refusals(pool) -> dict[str, int]:
    """Refusals before sign-in, by status, summed over their per-source rows."""
    totals: dict[str, int] = {}
    for event in events_of(pool, "-"):
        if event["kind"] == "http_refused" and event["actor"] == "anonymous":
            for status, n in event["detail"]["statuses"].items():
                totals[status] = totals.get(status, 0) + n
    return totals


def unchanged(before: dict[str, int], after: dict[str, int], *, refusals: int = 0) -> bool:
    return after.pop("audit_events") == before.pop("audit_events") + refusals and \
        {k: v for k, v in after.items() if k != "reviewer_tokens"} == {k: v for k, v in before.items() if k != "reviewer_tokens"}


def test_a_get_on_any_link_decides_nothing_signed_in_or_not(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    links = links_of(pool, "w1")
    anonymous, signed_in = browser(ctx), browser(ctx)
    sign_in(signed_in, token)
    before = table_counts(database_url)
    for client in (anonymous, signed_in):
        for url in links.values():
            for _ in range(3):  # a prefetcher, a mail scanner and a person
                response = client.get(url)
                assert response.status_code in (200, 303)
                client.head(url)
    assert unchanged(before, table_counts(database_url))
    page = signed_in.get(links["approve"])
    assert "Approve w1?" in page.text and "Confirm: approve as alice" in page.text
    assert ThreadRunner.for_thread(pool, "w1").thread_row("w1").status == "waiting"
    assert anonymous.get(links["approve"]).headers["location"].startswith("/login?next=%2Fthreads%2Fw1%2Fconfirm%2F")


def test_only_the_confirmation_post_with_its_csrf_token_decides_and_names_the_reviewer(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    mallory = tokens.create(pool, "mallory")
    links = links_of(pool, "w1")
    client, other = browser(ctx), browser(ctx)
    sign_in(client, token)
    sign_in(other, mallory)
    page = client.get(links["approve"]).text
    before = table_counts(database_url)
    assert browser(ctx).post(links["approve"], data={"csrf": csrf_of(page)}).status_code == 401  # no session
    assert client.post(links["approve"], data={}).status_code == 403  # no CSRF token
    assert client.post(links["approve"], data={"csrf": csrf_of(other.get(links["approve"]).text)}).status_code == 403  # another session's
    forged = client.post(links["approve"], data={"csrf": csrf_of(page)}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 303  # the token, not the Origin header, is the check; this one is valid
    after = table_counts(database_url)
    assert after["approvals"] == before["approvals"] + 1
    with pool.connection() as conn:
        assert conn.execute("SELECT actor, note FROM approvals WHERE thread_id = 'w1'").fetchone() == {"actor": "alice", "note": "approve link"}
    kinds = [(e["kind"], e["actor"], e["detail"].get("status")) for e in events_of(pool, "w1")]
    assert anonymous_refusals(pool) == {"401": 1} and kinds.count(("http_refused", "alice", 403)) == 2
    assert ("decision_approved", "alice", None) in kinds

    # The same link again: shown as used, saying who decided; its confirmation sent twice is
    # told it is recorded (nothing new is); anything else is refused.
    again = client.get(links["approve"])
    assert again.status_code == 409 and "already used: decided by alice" in again.text
    assert client.post(links["approve"], data={"csrf": csrf_of(page)}).status_code == 303
    assert client.post(links["reject"], data={"csrf": csrf_of(page), "feedback": "no"}).status_code == 409
    assert other.post(links["approve"], data={"csrf": csrf_of(other.get("/inbox").text)}).status_code == 409
    assert count_rows(pool, "approvals", thread_id="w1") == 1


def test_expired_tampered_and_wrong_thread_links_are_refused_and_audited(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    links = links_of(pool, "w1")
    csrf = csrf_of(client.get("/inbox").text)
    token_part = links["approve"].rsplit("/", 1)[1]
    payload, signature = token_part.split(".")
    expired = sign_link(KEY, Link("w1", "v", "d", "approve", int((datetime.now(timezone.utc) - timedelta(minutes=1)).timestamp())))
    cases = [
        (f"/threads/w2/confirm/{token_part}", 400, "belongs to another thread"),
        (f"/threads/w1/confirm/{payload}.{signature[:-2]}AA", 400, "not valid"),
        (f"/threads/w1/confirm/{payload[:-4]}.{signature}", 400, "not valid"),
        ("/threads/w1/confirm/garbage", 400, "not valid"),
        (f"/threads/w1/confirm/{expired}", 410, "expired"),
        (f"/threads/w1/confirm/{sign_link(b'x' * 40, Link('w1', 'v', 'd', 'approve', 2 ** 40))}", 400, "not valid"),
    ]
    before = table_counts(database_url)
    for url, status, says in cases:
        for method in ("GET", "POST"):
            response = client.request(method, url, data={"csrf": csrf} if method == "POST" else None)
            assert response.status_code == status and says in response.text, (method, url, response.status_code)
            assert "Nothing was changed" in response.text
    assert unchanged(before, table_counts(database_url), refusals=2 * len(cases))
    assert len([e for e in events_of(pool, "w2") if e["kind"] == "http_refused"]) == 2


def test_a_link_for_an_earlier_draft_is_refused(ctx, pool, database_url, waiting, cli):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    old = links_of(pool, "w1")
    assert cli("reject", "w1", "--feedback", "Say which version fixes it").exit_code == 0  # redrafted: a new gate visit
    page = client.get(old["approve"])
    assert page.status_code == 409 and f"already used: decided by {os_user()}" in page.text


def test_sign_in_is_protected_and_a_revoked_token_ends_the_session(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    form = client.get("/login")
    assert client.post("/login", data={"token": token, "csrf": "forged"}).status_code == 403  # login CSRF
    assert client.post("/login", data={"token": "sgn_wrong", "csrf": csrf_of(form.text)}).status_code == 401
    assert browser(ctx).post("/login", data={"token": token, "csrf": csrf_of(form.text)}).status_code == 403  # no nonce cookie
    sign_in(client, token)
    assert client.get("/inbox").status_code == 200
    evil = client.post("/login", data={"token": token, "csrf": csrf_of(client.get("/login").text), "next": "//evil.example/x"})
    assert evil.headers["location"] == "/inbox"  # no open redirect
    tokens.revoke(pool, "alice")
    assert client.get("/inbox").headers["location"] == "/login?next=%2Finbox"
    assert anonymous_refusals(pool) == {"403": 2, "401": 1}


def test_the_inbox_forms_need_the_session_csrf_and_keep_the_digest_rule(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    page = client.get("/threads/w1").text
    csrf = csrf_of(page)
    digest = re.search(r'name="expect" value="([^"]+)"', page).group(1)
    before = table_counts(database_url)
    assert client.post("/threads/w1/approve", data={"expect": digest}).status_code == 403
    assert client.post("/threads/w1/approve", data={"expect": "000000000000", "csrf": csrf}).status_code == 400  # no such digest
    assert client.post("/threads/w1/reject", data={"feedback": " ", "csrf": csrf}).status_code == 400
    assert client.post("/threads/w1/reject", data={"feedback": "x" * 70_000, "csrf": csrf}).status_code == 413
    assert client.post("/threads/w1/frobnicate", data={"csrf": csrf}).status_code == 404
    assert client.post("/threads/nope/approve", data={"expect": digest, "csrf": csrf}).status_code == 404
    assert unchanged(before, table_counts(database_url), refusals=6)
    done = client.post("/threads/w1/approve", data={"expect": digest, "csrf": csrf, "note": "ok"})
    assert done.status_code == 303 and done.headers["location"] == "/threads/w1?done=approved"
    assert count_rows(pool, "approvals", thread_id="w1", actor="alice") == 1


def test_the_inbox_approves_only_with_the_digest_of_the_content_reviewed(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    csrf = csrf_of(client.get("/threads/w1").text)
    before = table_counts(database_url)
    for form in ({"csrf": csrf}, {"csrf": csrf, "expect": ""}):
        response = client.post("/threads/w1/approve", data=form)
        assert response.status_code == 400 and "needs the digest of the content you reviewed" in response.text
    assert unchanged(before, table_counts(database_url), refusals=2)
    assert ThreadRunner.for_thread(pool, "w1").thread_row("w1").status == "waiting"


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie_and_a_session_ends_on_time(ctx, pool, database_url, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    copied = browser(ctx)
    copied.cookies.set("signoff_session", client.cookies["signoff_session"])
    assert copied.get("/inbox").status_code == 200
    assert client.post("/logout", data={"csrf": csrf_of(client.get("/inbox").text)}).status_code == 303
    assert copied.get("/inbox").headers["location"] == "/login?next=%2Finbox"
    assert copied.get("/threads/w1").status_code == 303
    assert count_rows(pool, "web_sessions") == 0

    sign_in(client, token)
    assert client.get("/inbox").status_code == 200
    ctx.clock = lambda: datetime.now(timezone.utc) + timedelta(hours=12, seconds=1)
    assert client.get("/inbox").headers["location"] == "/login?next=%2Finbox"


def test_a_decision_page_shows_only_its_own_confirmations_never_text_from_the_link(ctx, pool, waiting):
    token = tokens.create(pool, "alice")
    client = browser(ctx)
    sign_in(client, token)
    planted = client.get("/threads/w1", params={"done": "approved by the CFO. Call +1-555-0100 to confirm"})
    assert planted.status_code == 200 and "CFO" not in planted.text and "555" not in planted.text and 'id="flash"' not in planted.text
    shown = client.get("/threads/w1", params={"done": "handed-over"})
    assert "Recorded: handed over by alice." in shown.text


def test_the_secret_key_is_generated_once_with_mode_0600_and_a_short_one_is_refused(tmp_path):
    import stat

    from checkpoint.errors import InvalidInput
    from checkpoint.signing import secret_key

    first = secret_key(tmp_path / "home", {})
    assert stat.S_IMODE((tmp_path / "home" / "secret_key").stat().st_mode) == 0o600
    assert secret_key(tmp_path / "home", {}) == first and len(first) >= 32
    assert secret_key(tmp_path / "other", {"SIGNOFF_SECRET_KEY": "z" * 32}) == b"z" * 32
    assert not (tmp_path / "other").exists() or not (tmp_path / "other" / "secret_key").exists()
    with pytest.raises(InvalidInput, match="at least 32 characters"):
        secret_key(tmp_path / "home", {"SIGNOFF_SECRET_KEY": "short"})
    # a link signed with one key does not open with another
    link = sign_link(first, Link("w1", "v", "d", "approve", 2 ** 40))
    from checkpoint.signing import LinkError, read_link

    with pytest.raises(LinkError):
        read_link(b"y" * 64, link, thread_id="w1", now=datetime.now(timezone.utc))
    assert read_link(first, link, thread_id="w1", now=datetime.now(timezone.utc)).action == "approve"
