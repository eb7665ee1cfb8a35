"""`signoff stats`: a period's threads, gate waits, decisions, failures and tokens."""

from __future__ import annotations

import json

from tests.conftest import expect
from tests.fault_server import ok, status
from tests.scripted import ANSWERED
from tests.test_cli import BILLING_ANSWER


def test_stats_counts_threads_waits_decisions_failures_and_tokens_by_model(cli, server, database_url, monkeypatch, reviewer):
    monkeypatch.setenv("SIGNOFF_MODEL_PRICES", '{"openai:test-model": [1, 2]}')
    monkeypatch.setenv("SIGNOFF_MAX_ATTEMPTS", "1")
    server.script(ok('{"intent": "billing"}', prompt_tokens=100, completion_tokens=10), ok(ANSWERED, prompt_tokens=200, completion_tokens=20),
                  ok(BILLING_ANSWER, prompt_tokens=300, completion_tokens=30),  # st1 waits, then is approved
                  ok('{"intent": "billing"}', prompt_tokens=100, completion_tokens=10), status(400))  # st2: its agent fails
    assert cli("start", "support", "I was charged twice this month", "--thread", "st1").exit_code == 0
    assert reviewer("dana")("approve", "st1", *expect(database_url, "st1")).exit_code == 0
    assert cli("start", "support", "I was charged twice this month", "--thread", "st2").exit_code == 0

    shown = cli("stats", "--json", "--since", "1h")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["threads"] == {"finished": 1, "waiting": 1}
    assert document["gate_waits"]["decided"] == 1 and 0 <= document["gate_waits"]["median_seconds"] < 60
    assert document["gate_waits"]["by_gate"][0]["gate"] == "review"
    assert document["decisions"] == {"by_kind": {"approved": 1}, "by_reviewer": [{"actor": "dana", "kind": "approved", "count": 1}]}
    [failure] = document["failures"]
    assert failure["count"] == 1 and failure["reason"].startswith("billing_agent: billing_agent: HTTP 400")
    [model] = document["tokens"]["by_model"]
    assert (model["model"], model["calls"], model["input_tokens"], model["output_tokens"]) == ("openai:test-model", 4, 700, 70)
    assert model["calls_without_usage"] == 0 and model["cost"] == (700 * 1 + 70 * 2) / 1e6

    text = cli("stats", "--since", "1h")
    assert "decisions: approved 1" in text.output and "dana: approved 1" in text.output


def test_stats_refuses_a_bad_period_in_one_line(cli):
    result = cli("stats", "--since", "forever")
    assert result.exit_code == 2 and "--since must be a duration" in result.output and result.output.count("\n") == 1
