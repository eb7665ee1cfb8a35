"""SIGNOFF_REVIEW_MODEL: the judgement calls (the writing graphs' `review` node, the support
agents' hand-over decision) on a model of their own.

Real PostgreSQL, real OpenAI-compatible HTTP servers (tests/fault_server.py) and the
contexts the CLI builds from the environment (runtime.session.make_context), so the variable is tested
from where it is read to where a request lands.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from checkpoint.settings import Settings
from graphs.registry import REVISION
from runtime.thread_runner import ThreadRunner
from tests.fault_server import FaultServer, ok, status
from tests.scripted import REVIEWER, WRITER, review

BRIEF = "Explain why retries need idempotency keys."
DRAFT = "# Idempotency keys\n\nThey make retries safe."


def environment(database_url: str, home: Path, server: FaultServer, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:test-model",
            "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key", **extra}


def cli_runner(pool, env: dict[str, str]) -> ThreadRunner:
    """A revision runner on the context `signoff start` builds from `env`."""
    from runtime.session import make_context

    return ThreadRunner(pool, REVISION, make_context(Settings.from_env(env), pool))


def models_asked(server: FaultServer) -> list[tuple[str, str]]:
    """(model name, writer|reviewer) of every request the server received, in order."""
    return [(body["model"], "reviewer" if REVIEWER in str(body["messages"]) else "writer") for body in server.requests]


def test_the_review_prompt_goes_to_the_review_server_and_the_writer_prompts_to_the_first(pool, tmp_path):
    from nodes.models import registry_from_settings, review_registry_from_settings

    with FaultServer() as first, FaultServer() as second:
        first.rule(WRITER, ok(DRAFT)).rule(REVIEWER, ok(review(0.1)))  # would loop to a rewrite if it reviewed
        second.rule(REVIEWER, ok(review(0.9))).rule(WRITER, ok("# Wrong server"))
        settings = Settings.from_env(environment("unused", tmp_path, first, SIGNOFF_REVIEW_MODEL="openai:review-model"))
        from runtime.session import make_context

        context = make_context(settings, pool)
        # The same registry the CLI builds, pointed at the second server (OPENAI_BASE_URL is one
        # per process, so two servers need two settings).
        context = dataclasses.replace(context, review_models=review_registry_from_settings(dataclasses.replace(settings, openai_base_url=second.base_url)))
        stop = ThreadRunner(pool, REVISION, context).start("rm1", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
        assert models_asked(first) == [("test-model", "writer")]
        assert models_asked(second) == [("review-model", "reviewer")]
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["score"] == 0.9 and stop.values["gate_warning"] is None
    assert [(c["node"], c["model"]) for c in stop.values["calls"]] == [("write", "openai:test-model"), ("review", "openai:review-model")]
    assert registry_from_settings(settings).primary.name == "openai:test-model"


@pytest.mark.parametrize("review_model, reviewer", [(None, "test-model"), ("openai:test-model", "test-model"), ("openai:review-model", "review-model")])
def test_signoff_review_model_from_the_environment_picks_the_reviewer(pool, database_url, tmp_path, review_model, reviewer):
    """Unset (or the writer's own model): everything goes to SIGNOFF_MODEL, today's behaviour."""
    with FaultServer() as server:
        server.rule(WRITER, ok(DRAFT)).rule(REVIEWER, ok(review(0.9)))
        extra = {"SIGNOFF_REVIEW_MODEL": review_model} if review_model else {}
        runner = cli_runner(pool, environment(database_url, tmp_path, server, **extra))
        assert (runner.context.review_models is None) == (reviewer == "test-model")
        stop = runner.start("rm2", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
        assert models_asked(server) == [("test-model", "writer"), (reviewer, "reviewer")]
    assert (stop.status, stop.values["score"]) == ("waiting", 0.9)


def test_a_draft_the_server_cut_at_its_token_limit_is_revised_whatever_the_reviewer_scores(pool, database_url, tmp_path):
    """finish_reason "length" through the real client: the text looks finished, the server says it is not."""
    with FaultServer() as server:
        server.once(WRITER, ok(DRAFT, finish="length")).rule(WRITER, ok(DRAFT + " Each retry reuses the key.")).rule(REVIEWER, ok(review(0.9)))
        stop = cli_runner(pool, environment(database_url, tmp_path, server)).start("rm-len", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
    first, second = stop.values["drafts"]
    assert (first["score"], second["score"]) == (0.4, 0.9)
    assert first["feedback"].startswith("The draft stops mid-sentence")
    assert stop.values["document"].endswith("Each retry reuses the key.")


def test_a_failing_review_model_falls_back_to_signoff_fallback_model(pool, database_url, tmp_path):
    with FaultServer() as server:
        server.rule(WRITER, ok(DRAFT)).once(REVIEWER, status(400)).rule(REVIEWER, ok(review(0.9)))
        env = environment(database_url, tmp_path, server, SIGNOFF_REVIEW_MODEL="openai:review-model", SIGNOFF_FALLBACK_MODEL="openai:backup-model")
        stop = cli_runner(pool, env).start("rm3", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
        assert models_asked(server) == [("test-model", "writer"), ("review-model", "reviewer"), ("backup-model", "reviewer")]
    [call] = [c for c in stop.values["calls"] if c["node"] == "review"]
    assert (call["model"], call["fallback_used"]) == ("openai:backup-model", True)
    assert stop.values["score"] == 0.9 and stop.values["gate_warning"] is None


def test_a_failing_review_model_without_a_fallback_leaves_the_draft_unscored_not_scored_by_the_writer(pool, database_url, tmp_path):
    with FaultServer() as server:
        server.rule(WRITER, ok(DRAFT)).once(REVIEWER, status(400)).rule(REVIEWER, ok(review(0.9)))
        env = environment(database_url, tmp_path, server, SIGNOFF_REVIEW_MODEL="openai:review-model")
        stop = cli_runner(pool, env).start("rm4", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
        assert models_asked(server) == [("test-model", "writer"), ("review-model", "reviewer")]
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["score"] is None and stop.values["document"] == DRAFT
    assert any("reviewer failed (HTTP 400" in w for w in stop.values["warnings"])
    assert "the last draft, unreviewed" in stop.values["gate_warning"]


def test_the_support_agents_hand_over_decision_goes_to_the_review_model(database_url, tmp_path):
    """The agent's answer-or-hand-over choice is a judgement like a review score: it runs on
    SIGNOFF_REVIEW_MODEL; classify and the reply stay on SIGNOFF_MODEL."""
    from typer.testing import CliRunner

    from cli import app
    from tests.scripted import ANSWERED, CLASSIFY, REPLY

    with FaultServer() as server:
        server.rule(CLASSIFY, ok('{"intent": "billing"}')).rule("billing support agent", ok(ANSWERED)).rule(REPLY, ok("Pending authorizations drop off within 3-5 business days."))
        env = {**environment(database_url, tmp_path / "home", server, SIGNOFF_REVIEW_MODEL="openai:review-model")}
        started = CliRunner().invoke(app, ["start", "support", "I was charged twice this month"], env=env)
        asked = [(body["model"], next(n for n in (CLASSIFY, "billing support agent", REPLY) if n in str(body["messages"]))) for body in server.requests]
    assert started.exit_code == 0, started.output
    assert asked == [("test-model", CLASSIFY), ("review-model", "billing support agent"), ("test-model", REPLY)]


def test_a_local_review_model_starts_no_server_for_a_thread_that_makes_no_judgement(database_url, tmp_path):
    """Lazy: a support thread that escalates before its agent decides (classify failed) never
    starts the 1.5B server that SIGNOFF_REVIEW_MODEL=local:1.5b names."""
    from typer.testing import CliRunner

    from cli import app
    from nodes.local_model import server_status, stop_server
    from tests.scripted import CLASSIFY

    home = tmp_path / "home"
    with FaultServer() as server:
        server.rule(CLASSIFY, status(400))
        env = {**environment(database_url, home, server, SIGNOFF_REVIEW_MODEL="local:1.5b")}
        try:
            started = CliRunner().invoke(app, ["start", "support", "My export fails with error 7."], env=env)
            assert started.exit_code == 0, started.output
            assert "waiting at gate" in started.output
            assert server_status(home) is None
        finally:
            stop_server(home)  # only does anything if the test failed by starting one


def test_signoff_config_shows_the_review_model(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli import app

    base = {"SIGNOFF_HOME": str(tmp_path), "SIGNOFF_REVIEW_MODEL": ""}
    unset = CliRunner().invoke(app, ["config", "--json"], env=base)
    shown = CliRunner().invoke(app, ["config", "--json"], env={**base, "SIGNOFF_REVIEW_MODEL": "local:1.5b"})
    table = CliRunner().invoke(app, ["config"], env={**base, "SIGNOFF_REVIEW_MODEL": "local:1.5b"})
    value = lambda result: {s["variable"]: s["value"] for s in json.loads(result.output)["settings"]}["SIGNOFF_REVIEW_MODEL"]  # noqa: E731
    assert (value(unset), value(shown)) == ("(SIGNOFF_MODEL)", "local:1.5b")
    assert any(line.split()[:2] == ["SIGNOFF_REVIEW_MODEL", "local:1.5b"] for line in table.output.splitlines())


def non_judging(registry):
    """`registry` with its primary marked as the local 0.5B is: unable to judge (ModelHandle.judges)."""
    return dataclasses.replace(registry, primary=dataclasses.replace(registry.primary, judges=False))


def test_a_model_that_cannot_judge_is_never_asked_to_score_and_the_draft_reaches_the_gate_unscored(pool, make_context, tmp_path):
    from tests.scripted import scripted_registry

    models = non_judging(scripted_registry([(WRITER, DRAFT), (REVIEWER, review(0.9))]))
    runner, events = ThreadRunner(pool, REVISION, make_context(models)), []
    stop = runner.start("rm-nj", BRIEF, {"out_dir": str(tmp_path / "out")}, events.append)
    assert not any(REVIEWER in p for p in models.primary.chat.prompts), "the reviewer prompt was never sent"
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert [e["node"] for e in events if e["event"] == "node_end"] == ["write", "review", "choose_draft"], "no revisions against no score"
    assert stop.values["score"] is None and stop.values["document"] == DRAFT
    assert stop.values["gate_warning"].startswith("not scored: scripted:primary cannot tell a good draft from a poor one; set SIGNOFF_REVIEW_MODEL")
    assert "the last draft, unreviewed" in stop.values["gate_warning"]


def test_an_unscored_draft_cut_off_mid_sentence_reaches_the_gate_with_a_warning_saying_so(pool, make_context, tmp_path):
    from tests.scripted import scripted_registry

    models = non_judging(scripted_registry([(WRITER, "# Notes\n\nThe export runs nightly and")]))
    stop = ThreadRunner(pool, REVISION, make_context(models)).start("rm-nj-cut", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
    assert (stop.status, stop.gate, stop.values["score"]) == ("waiting", "publish", None)
    assert any(w.startswith("unscored draft: The draft stops mid-sentence") for w in stop.values["warnings"])


def test_a_fallback_that_cannot_judge_is_never_asked_to_score_when_the_reviewer_fails(pool, make_context, tmp_path):
    from tests.scripted import scripted_registry

    models = scripted_registry([(WRITER, DRAFT), (REVIEWER, PermissionError("refused"))], fallback_rules=[(REVIEWER, review(0.9))])
    models = dataclasses.replace(models, fallback=dataclasses.replace(models.fallback, judges=False))
    stop = ThreadRunner(pool, REVISION, make_context(models)).start("rm-nj-fb", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
    assert models.fallback.chat.prompts == [], "the fallback that may not judge was never asked"
    assert (stop.status, stop.gate, stop.values["score"]) == ("waiting", "publish", None)
    assert any(w.startswith("reviewer failed (") for w in stop.values["warnings"])


def test_a_review_model_that_judges_scores_the_drafts_of_a_writer_that_cannot(pool, make_context, tmp_path):
    from tests.scripted import scripted_registry

    writer = non_judging(scripted_registry([(WRITER, DRAFT)]))
    judge = scripted_registry([(REVIEWER, review(0.9))])
    stop = ThreadRunner(pool, REVISION, make_context(writer, review_models=judge)).start("rm-j", BRIEF, {"out_dir": str(tmp_path / "out")}, lambda e: None)
    assert stop.values["score"] == 0.9 and stop.values["gate_warning"] is None


@pytest.mark.parametrize("env, scored", [
    ({}, False),  # nothing configured: the local 0.5B judges nothing
    ({"SIGNOFF_REVIEW_MODEL": "local"}, False),
    ({"SIGNOFF_REVIEW_MODEL": "local:1.5b"}, True),
    ({"SIGNOFF_MODEL": "openai:test-model", "OPENAI_API_KEY": "k"}, True),
])
def test_signoff_config_says_when_no_model_makes_the_judgement_calls(tmp_path, env, scored):
    import json

    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["config", "--json"], env={"SIGNOFF_HOME": str(tmp_path), "SIGNOFF_MODEL": "", "SIGNOFF_REVIEW_MODEL": "", **env})
    assert result.exit_code == 0, result.output
    note = {s["variable"]: s["note"] for s in json.loads(result.output)["settings"]}["SIGNOFF_REVIEW_MODEL"]
    assert ("NO JUDGEMENT CALLS" not in note) == scored, note
