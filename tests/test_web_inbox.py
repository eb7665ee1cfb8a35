"""The whole path in real processes and a real browser: `signoff worker` and `signoff serve`
running, a support thread reaches its gate, one Slack message and one webhook reach local
receivers; the Approve link, followed in headless Chromium (the distribution's package,
driven by Playwright; no browser download), signs in, shows the draft, and confirming it
finishes the thread in the worker. The same link again is refused. Then the inbox: from the
list page to a finished thread."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from checkpoint import notifications, tokens
from checkpoint.audit import events_of
from runtime.thread_runner import ThreadRunner
from tests.conftest import count_rows
from tests.fault_server import ok
from tests.http_receiver import HttpReceiver
from tests.procs import ROOT, CliProcess, process_env, wait_until
from tests.web_fixtures import server  # noqa: F401 - fixtures
from tests.worker_procs import submit, workers  # noqa: F401 - fixture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receivers() -> Iterator[tuple[HttpReceiver, HttpReceiver]]:
    with HttpReceiver() as hook, HttpReceiver() as slack:
        yield hook, slack


@pytest.fixture
def web_env(env, receivers) -> dict[str, str]:
    hook, slack = receivers
    port = free_port()
    return {**env, "SIGNOFF_PUBLIC_URL": f"http://127.0.0.1:{port}", "SIGNOFF_PORT": str(port),
            "SIGNOFF_NOTIFY_WEBHOOK": hook.url, "SIGNOFF_NOTIFY_WEBHOOK_SECRET": "s3", "SIGNOFF_NOTIFY_SLACK": slack.url,
            "SIGNOFF_NOTIFY_BACKOFF": "1"}


@pytest.fixture
def serve(web_env) -> Iterator[CliProcess]:
    popen = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", web_env["SIGNOFF_PORT"]], cwd=ROOT,
                             env=process_env(web_env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1)
    proc = CliProcess(popen)
    try:
        proc.wait_for(r"serving on http://127\.0\.0\.1:\d+", timeout=60)
        wait_until(lambda: _accepts(int(web_env["SIGNOFF_PORT"])), timeout=20, what="the server to accept connections")
        yield proc
    finally:
        if popen.poll() is None:
            proc.kill()
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def status_of(pool, tid: str) -> str:
    return ThreadRunner.for_thread(pool, tid).thread_row(tid).status


def test_approve_link_in_a_real_browser_finishes_the_thread_in_the_worker(pool, web_env, receivers, workers, serve, browser, tmp_path):
    hook, slack = receivers
    token = tokens.create(pool, "Dana Reviewer")
    workers("--concurrency", "2", extra_env=web_env)
    submit(pool, "support", "b1", "The sync engine corrupts my notes", email="a@example.com")
    wait_until(lambda: len(slack.delivered()) == 1 and len(hook.delivered()) == 1, timeout=60, what="the Slack message and the webhook")
    buttons = {b["action_id"]: b["url"] for b in slack.delivered()[0].json()["blocks"][3]["elements"]}
    approve = buttons["approve"]
    assert approve.startswith(web_env["SIGNOFF_PUBLIC_URL"] + "/threads/b1/confirm/")
    draft = ThreadRunner.for_thread(pool, "b1").spec.review_content(ThreadRunner.for_thread(pool, "b1").snapshot("b1").values)

    page = browser.new_page()
    page.goto(approve)
    assert page.url.startswith(web_env["SIGNOFF_PUBLIC_URL"] + "/login?next=")  # the shared link names nobody: sign in once
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#confirm")
    assert page.inner_text("h1") == "Approve b1?"
    assert page.inner_text("#review").strip() == draft.strip()
    assert status_of(pool, "b1") == "waiting"  # showing the draft decided nothing
    page.click("#confirm")
    page.wait_for_selector("#status:has-text('finished')", timeout=30_000)  # the page refreshes while the worker runs it
    assert "approved by Dana Reviewer" in page.inner_text("#decisions")

    assert count_rows(pool, "outbox", thread_id="b1") == 1
    decided = [e for e in events_of(pool, "b1") if e["kind"] == "decision_approved"]
    assert [e["actor"] for e in decided] == ["Dana Reviewer"]
    assert [(n["event"], n["status"]) for n in notifications.of_thread(pool, "b1") if n["channel"] == "slack" and n["event"] == "waiting"] \
        == [("waiting", "sent")]
    assert len(slack.delivered()) == 1 and len(hook.delivered()) == 1

    response = page.goto(approve)  # the same link again
    assert response.status == 409 and "already used: decided by Dana Reviewer" in page.inner_text("#message")
    assert count_rows(pool, "approvals", thread_id="b1") == 1
    page.close()


def test_from_the_inbox_list_to_a_finished_thread(pool, web_env, workers, serve, browser, tmp_path):
    token = tokens.create(pool, "Sam Lead")
    workers("--concurrency", "3", extra_env=web_env)
    for tid, text in (("i1", "I was charged twice this month"), ("i2", "The sync engine corrupts my notes"), ("i3", "How do I export my data?")):
        submit(pool, "support", tid, text, email="a@example.com")
    wait_until(lambda: all(status_of(pool, t) == "waiting" for t in ("i1", "i2", "i3")), timeout=60, what="three threads at their gates")

    base = web_env["SIGNOFF_PUBLIC_URL"]
    page = browser.new_page(viewport={"width": 1200, "height": 640})
    page.goto(base + "/inbox")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("table.inbox")
    rows = page.locator("table.inbox tbody tr")
    assert rows.count() == 3
    row = page.locator("table.inbox tbody tr", has_text="i2").inner_text()
    assert "support" in row and "review" in row and "sync engine" in row and "UTC" in row
    shot = Path(os.environ.get("SIGNOFF_INBOX_SCREENSHOT") or tmp_path / "inbox.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.click("a.thread:has-text('i2')")
    page.wait_for_selector("#review")
    assert page.inner_text("#digest") == ThreadRunner.for_thread(pool, "i2").thread_row("i2").digest
    page.fill("#note", "checked the ticket")
    page.click("#approve")
    page.wait_for_selector("#status:has-text('finished')", timeout=30_000)
    assert "approved by Sam Lead — checked the ticket" in page.inner_text("#decisions")
    assert count_rows(pool, "outbox", thread_id="i2") == 1

    page.goto(base + "/inbox")
    assert page.locator("table.inbox tbody tr").count() == 2
    page.close()


def test_handing_a_support_thread_to_a_specialist_from_its_page(pool, web_env, workers, serve, browser):
    token = tokens.create(pool, "Sam Lead")
    workers("--concurrency", "2", extra_env=web_env)
    submit(pool, "support", "i4", "I was charged twice this month", email="a@example.com")
    wait_until(lambda: status_of(pool, "i4") == "waiting", timeout=60, what="i4 at its gate")

    page = browser.new_page()
    page.goto(web_env["SIGNOFF_PUBLIC_URL"] + "/threads/i4")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#review")
    page.fill("#handover-note", "looks like a billing dispute")
    page.click("#handover")
    page.wait_for_selector("#status:has-text('finished')", timeout=30_000)
    assert "rejected by Sam Lead — handed over to a specialist: looks like a billing dispute" in page.inner_text("#decisions")
    assert count_rows(pool, "outbox", thread_id="i4", kind="holding") == 1
    assert count_rows(pool, "tickets", thread_id="i4", status="open") == 1
    page.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot: into $SIGNOFF_INBOX_SCREENSHOTS (the README's pictures) when
    set, into the test's own folder otherwise."""
    shot = Path(os.environ.get("SIGNOFF_INBOX_SCREENSHOTS") or tmp_path) / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return shot


def test_a_finished_thread_is_found_by_a_word_of_its_message_with_its_timeline_drafts_and_what_was_sent(
        pool, web_env, workers, serve, browser, tmp_path):
    token = tokens.create(pool, "Sam Lead")
    workers("--concurrency", "3", extra_env=web_env)
    for tid, text in (("k1", "My invoice shows the wrong address"), ("k2", "The sync engine corrupts my notes"),
                      ("k3", "Notes do not sync between my phone and laptop")):
        submit(pool, "support", tid, text, email="a@example.com")
    wait_until(lambda: all(status_of(pool, t) == "waiting" for t in ("k1", "k2", "k3")), timeout=60, what="three threads at their gates")

    base = web_env["SIGNOFF_PUBLIC_URL"]
    page = browser.new_page(viewport={"width": 1200, "height": 720})
    page.goto(base + "/threads/k2")
    page.fill("#token", token)
    page.click("button[type=submit]")
    first = page.inner_text("#digest")
    page.fill("#feedback", "say when it will be fixed")
    page.click("#reject")
    page.wait_for_selector(f"#digest:not(:has-text('{first}'))", timeout=30_000)  # the redraft, shown when its run stops
    page.fill("#note", "checked the ticket")
    page.click("#approve")
    page.wait_for_selector("#status:has-text('finished')", timeout=30_000)

    page.goto(base + "/inbox")
    page.click("#list-finished")
    page.wait_for_url("**/inbox?status=finished")
    page.fill("#q", "corrupted")  # the message says "corrupts": one stem
    page.click("#search")
    page.wait_for_url("**q=corrupted**")
    assert [page.locator("a.thread").nth(i).inner_text() for i in range(page.locator("a.thread").count())] == ["k2"]
    screenshot(page, tmp_path, "inbox-search.png")

    page.click("a.thread:has-text('k2')")
    page.wait_for_selector("#timeline")
    with pool.connection() as conn:
        decided = conn.execute("SELECT decision, digest FROM approvals WHERE thread_id = 'k2' ORDER BY decided_at").fetchall()
        sent = conn.execute("SELECT body FROM outbox WHERE thread_id = 'k2'").fetchone()["body"]
    assert [page.locator(".draft-digest").nth(i).inner_text() for i in range(2)] == [d["digest"] for d in decided]
    assert [d["decision"] for d in decided] == ["rejected", "approved"]
    assert page.locator("pre.diff .add").count() >= 1 and page.locator("pre.diff .del").count() >= 1
    assert page.inner_text("#sent pre.sent-body") == sent
    timeline = page.inner_text("#timeline")
    assert "review: rejected by Sam Lead" in timeline and "review: approved by Sam Lead" in timeline and "reply sent to" in timeline
    assert page.locator("#steps tr").count() >= 5
    screenshot(page, tmp_path, "inbox-thread.png")
    page.close()


def test_a_running_thread_s_progress_appears_in_its_page_without_a_reload(pool, server, web_env, workers, serve, browser, tmp_path):
    server.once("Classify the customer message", ok('{"intent": "technical"}', delay=3.0))  # a slow first step to watch
    token = tokens.create(pool, "Sam Lead")
    submit(pool, "support", "l1", "The sync engine corrupts my notes", email="a@example.com")  # queued: no worker yet

    page = browser.new_page(viewport={"width": 1200, "height": 720})
    page.goto(web_env["SIGNOFF_PUBLIC_URL"] + "/threads/l1")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#live")
    assert page.inner_text("#status") == "queued"
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    workers("--concurrency", "1", extra_env=web_env)
    page.wait_for_selector("#live-events li:has-text('classify started')", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True and page.inner_text("#status") == "running"
    screenshot(page, tmp_path, "inbox-live.png")
    page.wait_for_selector("#review", timeout=30_000)  # at the stop the page shows the gate it reached
    assert status_of(pool, "l1") == "waiting"
    page.close()


def test_many_pages_following_progress_never_hold_up_other_requests(pool, web_env, serve):
    """Sixty open progress streams (more than the server's thread pool has threads), and the
    inbox still answers at once."""
    import re
    import time

    import httpx

    with pool.connection() as conn:
        conn.execute("INSERT INTO threads (thread_id, graph, status, summary) VALUES ('m1', 'support', 'running', 'still running')")
    port = int(web_env["SIGNOFF_PORT"])
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)[1]
        client.post("/login", data={"token": tokens.create(pool, "Sam Lead"), "csrf": csrf, "next": "/inbox"})
        session = client.cookies["signoff_session"]
        streams = []
        try:
            for _ in range(60):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(f"GET /threads/m1/progress HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: signoff_session={session}\r\n\r\n".encode())
                streams.append(sock)
            assert all(sock.recv(64).startswith(b"HTTP/1.1 200") for sock in streams)
            begun = time.monotonic()
            answer = client.get("/inbox?status=running", timeout=10)
            assert answer.status_code == 200 and "m1" in answer.text and time.monotonic() - begun < 5
        finally:
            for sock in streams:
                sock.close()


def test_serving_beyond_loopback_warns_to_put_tls_in_front(pool, tmp_path, monkeypatch):
    """Checked without binding anything: uvicorn.run is replaced by a recorder for this one test."""
    import uvicorn

    from web.server import is_loopback, serve as run_server

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    started, lines, warnings = [], [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    monkeypatch.setenv("SIGNOFF_SECRET_KEY", "k" * 40)
    run_server(pool, tmp_path, "0.0.0.0", 8321, log=lines.append, warn=warnings.append)
    run_server(pool, tmp_path, "127.0.0.1", 8321, log=lines.append, warn=warnings.append)
    assert len(warnings) == 1 and "without TLS" in warnings[0] and "0.0.0.0" in warnings[0]
    assert [kw["host"] for kw in started] == ["0.0.0.0", "127.0.0.1"]


def test_hostile_paths_to_the_real_server_get_a_4xx_and_leave_no_traceback(pool, web_env, serve):
    import http.client

    port = int(web_env["SIGNOFF_PORT"])
    answers = {}
    for path in ("/api/threads/%00", "/api/threads/h1%00/approve", "/threads/%00", "/threads/%ff%fe/confirm/%00.%ff",
                 "/api/threads/" + "a" * 4000, "/login?next=/%00%0d%0aSet-Cookie:%20x=1"):
        for method in ("GET", "POST"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, path, body=b"" if method == "POST" else None)
            answers[(method, path)] = conn.getresponse().status
            conn.close()
    assert all(status < 500 for status in answers.values()), answers
    assert answers[("GET", "/api/threads/%00")] == 401 and answers[("GET", "/threads/%00")] == 303
    serve.kill()
    assert "Traceback" not in "\n".join(serve.err) and "Exception" not in "\n".join(serve.err), serve.err
