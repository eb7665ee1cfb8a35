"""The inbox as a place to look (in-process, Starlette's TestClient, on the real database):
every list (waiting, running, finished, failed, expired), filtered and searched, paged by
keys; a thread's page with its timeline, every draft a reviewer saw with the change between
them, and what was finally sent; its progress as server-sent events; untrusted text escaped."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from checkpoint import browse, tokens
from tests.conftest import review_digest
from tests.web_fixtures import ctx, server  # noqa: F401 - fixtures
from web.app import create_app


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        yield client


def signed_in(client, pool, name="Robin"):
    token = tokens.create(pool, name)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)[1]
    assert client.post("/login", data={"token": token, "csrf": csrf, "next": "/inbox"}, follow_redirects=False).status_code == 303
    return client


def add_threads(pool, rows):
    """Thread rows as runs leave them: (id, graph, status, summary, minutes since updated)."""
    now = datetime.now(timezone.utc)
    with pool.connection() as conn:
        for tid, graph, status, summary, minutes in rows:
            conn.execute("INSERT INTO threads (thread_id, graph, status, summary, updated_at, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                         (tid, graph, status, summary, now - timedelta(minutes=minutes), now - timedelta(minutes=minutes + 1)))


def listed(client, query):
    return re.findall(r'<a class="thread" href="/threads/([^"]+)"', client.get("/inbox?" + query).text)


@pytest.fixture
def cli_thread(cli, database_url):
    """A support thread rejected once (a redraft), then approved: finished, its reply sent."""
    assert cli("start", "support", "The sync engine corrupts my notes", "--thread", "s1").exit_code == 0
    assert cli("reject", "s1", "--feedback", "say when it will be fixed").exit_code == 0
    assert cli("approve", "s1", "--expect", review_digest(database_url, "s1")).exit_code == 0
    return "s1"


def test_keyset_pages_cover_a_list_once_each_in_order(pool):
    add_threads(pool, [(f"t{i:02d}", "support", "finished", f"case {i}", i % 7) for i in range(23)])
    seen, key = [], None
    while True:
        page = browse.threads_page(pool, browse.Filters(status="finished"), after=key, limit=5)
        assert page.total == 23
        seen += [(r.updated_at, r.thread_id) for r in page.rows]
        key = page.next_key
        if key is None:
            break
    assert len(seen) == 23 and seen == sorted(seen, reverse=True)  # newest first, none twice, none left out


def test_each_list_holds_its_statuses_filtered_by_graph_and_age(client, pool):
    add_threads(pool, [("w1", "support", "waiting", "a", 300), ("w2", "revision", "waiting", "b", 5), ("r1", "support", "running", "c", 1),
                       ("q1", "research", "queued", "d", 2), ("f1", "support", "finished", "e", 10), ("x1", "support", "failed", "f", 20)])
    with pool.connection() as conn:
        conn.execute("INSERT INTO approvals (thread_id, gate, checkpoint_id, decision, actor) VALUES ('f1', 'review', 'c1', 'expired', 'signoff (deadline)')")
    signed_in(client, pool)
    assert listed(client, "") == ["w1", "w2"]  # waiting by default, the longest wait first
    assert listed(client, "status=running") == ["r1", "q1"]
    assert listed(client, "status=finished") == ["f1"] and listed(client, "status=failed") == ["x1"]
    assert listed(client, "status=expired") == ["f1"]
    assert listed(client, "status=waiting&graph=revision") == ["w2"]
    assert listed(client, "status=waiting&older=1h") == ["w1"] and listed(client, "status=all&newer=3m") == ["r1", "q1"]


def test_a_thread_is_found_by_its_id_or_a_word_of_its_message_in_any_form(client, pool):
    add_threads(pool, [("c1", "support", "finished", "I was charged twice this month", 3),
                       ("c2", "support", "finished", "The sync engine corrupts my notes", 2),
                       ("c3", "revision", "waiting", "Write a note on charging cables", 1)])
    signed_in(client, pool)
    assert listed(client, "status=all&q=charge") == ["c3", "c1"]  # "charged", "charging": one stem
    assert listed(client, "status=finished&q=corrupted+notes") == ["c2"]
    assert listed(client, "status=all&q=c2") == ["c2"]
    assert listed(client, "status=all&q=refund") == []


def test_bad_filters_are_one_line_400_and_a_damaged_page_key_too(client, pool):
    signed_in(client, pool)
    for query in ("status=sleeping", "older=soon", "graph=%3Cx%3E", "after=%25%25"):
        page = client.get("/inbox?" + query)
        assert page.status_code == 400, query
        assert len(re.search(r'<p id="message">([^<]*)</p>', page.text)[1].splitlines()) == 1


def test_next_page_links_continue_where_the_page_ended(client, pool):
    add_threads(pool, [(f"p{i:03d}", "support", "finished", "a case", i) for i in range(browse.PAGE_SIZE + 3)])
    signed_in(client, pool)
    first = client.get("/inbox?status=finished").text
    link = re.search(r'href="(/inbox\?[^"]+)" id="next-page"', first)[1].replace("&amp;", "&")
    second = re.findall(r'<a class="thread" href="/threads/([^"]+)"', client.get(link).text)
    assert second == [f"p{i:03d}" for i in range(browse.PAGE_SIZE, browse.PAGE_SIZE + 3)]


def test_a_thread_page_shows_each_draft_with_its_digest_the_change_and_what_was_sent(client, pool, cli_thread):
    signed_in(client, pool)
    html = client.get("/threads/s1").text
    with pool.connection() as conn:
        decided = conn.execute("SELECT decision, digest, actor FROM approvals WHERE thread_id = 's1' ORDER BY decided_at").fetchall()
        sent = conn.execute("SELECT body FROM outbox WHERE thread_id = 's1'").fetchone()["body"]
    who = decided[0]["actor"]
    assert [d["decision"] for d in decided] == ["rejected", "approved"]
    assert re.findall(r'<code class="draft-digest">([0-9a-f]+)</code>', html) == [d["digest"] for d in decided]
    drafts = re.findall(r'<pre class="review draft-body">(.*?)</pre>', html, re.S)
    assert len(drafts) == 2 and drafts[0] != drafts[1]
    diff = re.search(r'<pre class="diff">(.*?)</pre>', html, re.S)[1]
    assert f'<span class="del">-{drafts[0].splitlines()[0]}</span>' in diff and f'<span class="add">+{drafts[1].splitlines()[0]}</span>' in diff
    assert re.search(r'<pre class="review sent-body">(.*?)</pre>', html, re.S)[1] == sent
    timeline = re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', html, re.S)[1]
    for expected in ("classify (", "stopped: waiting at gate review", f"review: rejected by {who}", f"review: approved by {who}",
                     "reply sent to", "stopped: finished", "tokens 7/3"):
        assert expected in timeline, expected


def test_untrusted_text_is_shown_escaped_in_lists_and_on_the_thread_page(client, cli, pool, database_url):
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    assert cli("start", "support", f"My notes vanished {hostile}", "--thread", "e1").exit_code == 0
    assert cli("reject", "e1", "--feedback", hostile).exit_code == 0
    signed_in(client, pool)
    found, thread = client.get("/inbox?status=all&q=vanished").text, client.get("/threads/e1").text
    for html in (found, thread):
        assert "<script>alert" not in html and "<img src=x" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(2)&#34;&gt;"
    assert f"My notes vanished {escaped}</td>" in found  # found by a word, shown as text
    assert f'<p class="note">Note: {escaped}</p>' in thread  # the rejected draft's feedback
    assert f"<li>{escaped}</li>" in re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', thread, re.S)[1]


def test_progress_is_served_as_events_after_the_id_given_ending_at_the_stop(client, pool, cli_thread):
    assert client.get("/threads/s1/progress").status_code == 401  # only for a signed-in reviewer
    signed_in(client, pool)
    with pool.connection() as conn:
        ids = [r["id"] for r in conn.execute("SELECT id FROM progress_events WHERE thread_id = 's1' AND event->>'event' = 'stop' ORDER BY id")]
    assert client.get("/threads/nope/progress").status_code == 404
    response = client.get(f"/threads/s1/progress?after={ids[-2]}")  # from the second gate's stop on
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [(m[1], int(m[0]), json.loads(m[2])) for m in re.findall(r"id: (\d+)\nevent: (\w+)\ndata: (.*)\n\n", response.text)]
    assert all(i > ids[-2] for _, i, _ in events)  # nothing at or before the id asked for again
    assert events[-1][0] == "stop" and events[-1][1] == ids[-1] and events[-1][2]["line"] == "stopped: finished"
    assert [e[2]["line"].split(" ")[0] for e in events if e[0] == "progress" and "done in" in e[2]["line"]] == ["review", "send_approved_reply"]
    # a reconnect after the last event (Last-Event-ID) is told at once that the thread ended
    resumed = client.get("/threads/s1/progress", headers={"Last-Event-ID": str(ids[-1])}).text
    assert "event: progress" not in resumed and '"line": "the thread is finished"' in resumed


def test_each_step_shows_its_tokens_and_cost_when_its_model_has_a_price(client, pool, cli_thread, monkeypatch):
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", '{"openai:test-model": {"input": 1000, "output": 2000}}')
    signed_in(client, pool)
    html = client.get("/threads/s1").text
    steps = re.search(r'<tbody id="steps">(.*?)</tbody>', html, re.S)[1]
    assert "<td>7/3, cost 0.013000</td>" in steps  # 7 x 1000 + 3 x 2000 per million
    calls = steps.count("<td>7/3, cost 0.013000</td>")
    assert re.search(r'<p id="tokens">Tokens: (\d+) in, (\d+) out, cost ([0-9.]+)</p>', html).groups() == \
        (str(7 * calls), str(3 * calls), f"{0.013 * calls:.6f}")


def test_a_published_document_is_shown_as_it_was_written(client, pool, database_url, tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from tests.fault_server import FaultServer, ok

    with FaultServer() as server:
        server.script(ok("# Idempotency keys\n\nThey make <retries> safe."), ok('{"score": 0.9, "feedback": "Good."}'))
        env = {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_MODEL": "openai:test-model",
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key"}
        runner = CliRunner()
        assert runner.invoke(app, ["start", "revision", "Explain idempotency keys", "--thread", "pub", "--out", str(tmp_path / "out")],
                             env=env).exit_code == 0
        assert runner.invoke(app, ["approve", "pub", "--expect", review_digest(database_url, "pub")], env=env).exit_code == 0
    with pool.connection() as conn:
        document = conn.execute("SELECT title, body, path FROM documents WHERE thread_id = 'pub'").fetchone()
    signed_in(client, pool)
    html = client.get("/threads/pub").text
    sent = re.search(r'<section class="card" id="sent">(.*?)</section>', html, re.S)[1]
    assert "<h2>What was published</h2>" in sent and f"<code>{document['path']}</code>" in sent
    assert re.search(r'<pre class="review sent-body">(.*?)</pre>', sent, re.S)[1] == document["body"].replace("<", "&lt;").replace(">", "&gt;")
    assert "published " in re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', html, re.S)[1]


def test_a_pruned_thread_keeps_its_drafts_digests_and_what_was_sent(client, cli, pool, cli_thread):
    assert cli("db", "prune").exit_code == 0  # only the last checkpoint of a finished thread is kept
    signed_in(client, pool)
    page = client.get("/threads/s1")
    assert page.status_code == 200
    with pool.connection() as conn:
        digests = [r["digest"] for r in conn.execute("SELECT digest FROM approvals WHERE thread_id = 's1' ORDER BY decided_at")]
    assert re.findall(r'<code class="draft-digest">([0-9a-f]+)</code>', page.text) == digests
    assert page.text.count("The content of this draft is no longer kept (pruned)") == 2
    assert '<pre class="review sent-body">' in page.text


def test_a_step_s_warnings_and_the_check_lines_at_the_gate_are_shown(client, cli, pool, database_url):
    assert cli("start", "support", "The sync engine corrupts my notes", "--thread", "w1").exit_code == 0
    assert cli("reject", "w1", "--feedback", "say when it will be fixed").exit_code == 0
    assert cli("reject", "w1", "--feedback", "still not it").exit_code == 0  # the model answers the same again
    signed_in(client, pool)
    html = client.get("/threads/w1").text
    redrafts = re.findall(r'<td rowspan="\d+">redraft</td>.*?<td rowspan="\d+" class="warn">(.*?)</td></tr>', html, re.S)
    assert len(redrafts) == 2 and redrafts[0].strip() == "" and "already rejected, word for word" in redrafts[1]
    last = re.findall(r'<pre class="review draft-body">(.*?)</pre>', html, re.S)[-1]
    assert last.startswith("check: ") and "already rejected, word for word" in last.splitlines()[0]
    assert "warning: " in re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', html, re.S)[1]


def test_a_page_opened_after_its_run_stopped_at_a_gate_is_told_it_stopped(pool):
    import asyncio

    from web.live import stream

    with pool.connection() as conn:
        conn.execute("INSERT INTO threads (thread_id, graph, status, summary) VALUES ('w1', 'support', 'waiting', 'a reply to review')")

    async def chunks() -> list[str]:
        return [chunk async for chunk in stream(pool, "w1", after=10**9, seconds=5)]

    assert any(chunk.startswith("id:") and "event: stop" in chunk for chunk in asyncio.run(chunks())), \
        "a stop read before the stream opened is not sent again: the page must still learn the run stopped"
