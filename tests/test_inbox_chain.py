"""A refund thread's page in the inbox: the approval chain it waits on (each stage, who may
approve, who may not), the stage approvals so far, and once the chain completes, the payment
steps it made."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from tests.conftest import expect
from tests.test_approval_chain import ask, server, signoff, with_roles  # noqa: F401 - fixtures
from tests.test_inbox_history import signed_in
from tests.web_fixtures import ctx  # noqa: F401 - fixture
from web.app import create_app


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        yield client


def section(html: str, section_id: str) -> str:
    return re.sub(r"\s+", " ", re.search(rf'<section[^>]*id="{section_id}">(.*?)</section>', html, re.S)[1])


def test_a_refund_thread_page_shows_its_chain_then_its_payment_steps(signoff, server, pool, database_url, with_roles, client):
    ask(server, signoff, "1021", "noah.kim@example.com", "big")  # requested by mia; 1499.00 USD: two stages
    digest = expect(database_url, "big")
    assert signoff("alice", "approve", "big", *digest).exit_code == 0
    signed_in(client, pool, "Viewer")
    chain = section(client.get("/threads/big").text, "chain")
    assert "Waiting for stage 2/2 finance (2 of carol, dave, erin)" in chain
    assert "<li>stage 1/2 support-lead: approved by alice</li>" in chain
    assert "<li>requested by mia, who may not approve it</li>" in chain
    assert "stage 1 by alice (support-lead)" in chain  # approved so far
    row = re.search(r'<a class="thread" href="/threads/big">.*?</tr>', client.get("/inbox").text, re.S)[0]
    assert "waits for stage 2/2 finance (2 of carol, dave, erin)" in row  # in the list too, as `pending` shows it

    assert signoff("carol", "approve", "big", *digest).exit_code == 0
    assert signoff("dave", "approve", "big", *digest).exit_code == 0
    html = client.get("/threads/big").text
    assert 'id="chain"' not in html  # decided: no stage waits any more
    effects = section(html, "effects")
    assert "credit_note 1499.00 USD on order 1021: done" in effects and "refund 1499.00 USD on order 1021: done" in effects
    drafts = re.findall(r"<summary>(.*?)</summary>", html, re.S)
    assert len(drafts) == 1 and "approved by dave" in drafts[0]
    assert re.findall(r"stage (\d) approved by (\w+)", section(html, "drafts")) == [("1", "alice"), ("2", "carol")]
