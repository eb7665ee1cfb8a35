"""Tokens and cost of every model call, per step and per thread, in `show`, `show --json` and
the API, priced with SIGNOFF_MODEL_PRICES."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tests.fault_server import ok
from tests.scripted import ANSWERED
from tests.test_cli import BILLING_ANSWER
from tests.web_fixtures import ctx  # noqa: F401 - fixture
from web.app import create_app

PRICES = '{"openai:test-model": {"input": 2.5, "output": 10}}'


@pytest.fixture
def billing(server, cli):
    """A support thread whose three calls (the reply streamed) each report their own usage."""
    server.script(ok('{"intent": "billing"}', prompt_tokens=120, completion_tokens=6), ok(ANSWERED, prompt_tokens=300, completion_tokens=4),
                  ok(BILLING_ANSWER, prompt_tokens=500, completion_tokens=60))
    assert cli("start", "support", "I was charged twice this month", "--thread", "u1").exit_code == 0
    return "u1"


def test_show_json_gives_each_steps_tokens_and_cost_and_the_threads_totals(cli, env, billing, monkeypatch):
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", PRICES)
    shown = cli("show", billing, "--json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert [(s["node"], s["input_tokens"], s["output_tokens"], s["cost"]) for s in document["steps"]] == [
        ("classify", 120, 6, (120 * 2.5 + 6 * 10) / 1e6), ("billing_agent", 300, 4, (300 * 2.5 + 4 * 10) / 1e6),
        ("draft_reply", 500, 60, (500 * 2.5 + 60 * 10) / 1e6)]
    tokens = document["tokens"]
    assert (tokens["input_tokens"], tokens["output_tokens"], tokens["unpriced_calls"]) == (920, 70, 0)
    assert tokens["cost"] == pytest.approx((920 * 2.5 + 70 * 10) / 1e6)
    assert tokens["by_model"] == [{"model": "openai:test-model", "calls": 3, "input_tokens": 920, "output_tokens": 70, "cost": tokens["cost"]}]


def test_show_prints_the_threads_tokens_and_cost(cli, billing, monkeypatch):
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", PRICES)
    shown = cli("show", billing)
    assert shown.exit_code == 0, shown.output
    assert "tokens: 920 in, 70 out, cost 0.003000" in shown.output
    assert "500/60" in shown.output


def test_without_prices_show_json_gives_tokens_and_no_cost(cli, billing):
    document = json.loads(cli("show", billing, "--json").stdout)
    assert (document["tokens"]["input_tokens"], document["tokens"]["cost"]) == (920, None)
    assert all(step["cost"] is None for step in document["steps"])


def test_the_api_gives_each_steps_tokens_and_the_threads_totals(ctx, billing, monkeypatch):  # noqa: F811
    from checkpoint.tokens import create as create_token

    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", PRICES)
    token = create_token(ctx.pool, "reader")
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        response = client.get(f"/api/threads/{billing}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["node"], s["input_tokens"], s["output_tokens"]) for s in body["steps"]] == [
        ("classify", 120, 6), ("billing_agent", 300, 4), ("draft_reply", 500, 60)]
    assert (body["tokens"]["input_tokens"], body["tokens"]["output_tokens"]) == (920, 70)
    assert body["tokens"]["cost"] == pytest.approx(0.003)


@pytest.mark.parametrize("prices", ["not json", "[1, 2]", '{"m": {"input": -1, "output": 2}}', '{"m": {"input": "x"}}', '{"m": [1e400, 1]}'])
def test_an_unusable_price_table_is_one_line_and_exit_2(cli, billing, monkeypatch, prices):
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", prices)
    shown = cli("show", billing)
    assert shown.exit_code == 2
    assert shown.output.count("\n") == 1 and "SIGNOFF_MODEL_PRICES" in shown.output and "Traceback" not in shown.output


def test_config_shows_the_price_table_and_says_when_it_cannot_be_used(cli, monkeypatch):
    settings = lambda: {s["variable"]: s["value"] for s in json.loads(cli("config", "--json").stdout)["settings"]}  # noqa: E731
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", PRICES)
    assert settings()["SIGNOFF_MODEL_PRICES"] == "1 models priced"
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", "[1, 2]")
    assert settings()["SIGNOFF_MODEL_PRICES"].startswith("CANNOT BE USED: SIGNOFF_MODEL_PRICES must be a JSON object")
