"""The research pipeline: parallel researchers, graceful degradation, the report, the live view."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI
from rich.console import Console

from console.progress import ProgressPrinter
from graphs.registry import RESEARCH
from runtime.thread_runner import ThreadRunner
from nodes.models import ModelHandle, ModelRegistry
from tests.conftest import count_rows, expect
from tests.fault_server import FaultServer, ok
from tests.scripted import REVIEWER, WRITER, scripted_registry

TOPIC = "durable workflows"
SUBTASKS = ["What does a checkpoint contain?", "How do idempotency keys prevent duplicates?", "How does saga compensation work?"]
PLAN = ("Split the research topic", json.dumps({"subtasks": SUBTASKS}))
SUMMARY = ("Summarise what the passages say", "The passages say it is saved state plus keys.")
WRITE = (WRITER, "# Durable workflows\n\nCheckpoints, keys and sagas keep work safe.")
REVIEW = (REVIEWER, '{"score": 0.9, "feedback": "Fine."}')


def fails(subtask: str) -> tuple[str, Exception]:
    return (f"Question: {subtask}", RuntimeError(f"researcher down for {subtask}"))


@pytest.fixture
def run(pool, make_context, tmp_path):
    def make(rules, models=None) -> tuple[ThreadRunner, list[dict], dict]:
        context = make_context(models or scripted_registry(rules))
        return ThreadRunner(pool, RESEARCH, context), [], {"out_dir": str(tmp_path / "out")}

    return make


def prompts(runner: ThreadRunner) -> list[str]:
    return runner.context.models.primary.chat.prompts


def test_each_subtask_is_researched_and_the_report_cites_its_sources(run, pool):
    runner, events, options = run([PLAN, SUMMARY, WRITE, REVIEW])
    stop = runner.start("q1", TOPIC, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert count_rows(pool, "corpus_documents") == 8, "the sample corpus is loaded on first use"
    assert [f["subtask"] for f in stop.values["covered"]] == SUBTASKS
    assert sum(e["event"] == "node_end" and e["node"] == "research" for e in events) == 3
    report = stop.values["document"]
    assert report.startswith("# Durable workflows")
    sources = report.split("## Sources", 1)[1]
    assert "(corpus: durable-idempotency-keys)" in sources and "(corpus: durable-saga-compensation)" in sources
    assert "## Not covered" not in report
    writer_prompt = next(p for p in prompts(runner) if WRITE[0] in p)
    assert "[2] How do idempotency keys prevent duplicates? The passages say" in writer_prompt


def test_one_failing_researcher_leaves_a_report_from_the_others_listing_what_is_missing(run, pool):
    runner, events, options = run([PLAN, fails(SUBTASKS[2]), SUMMARY, WRITE, REVIEW])
    stop = runner.start("q2", TOPIC, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert [f["subtask"] for f in stop.values["covered"]] == SUBTASKS[:2]
    assert stop.values["missing"] == [{"round": 0, "index": 3, "subtask": SUBTASKS[2], "error": f"RuntimeError: researcher down for {SUBTASKS[2]}"}]
    assert any("1 of 3 researchers failed" in w for w in stop.values["warnings"])
    runner.decide("q2", "approved", actor="alice")
    stop = runner.resume("q2", events.append)
    assert stop.values["outcome"] == "published"
    published = Path(stop.values["path"]).read_text(encoding="utf-8")
    missing = published.split("## Not covered", 1)[1]
    assert SUBTASKS[2] in missing and "researcher down" in missing
    assert count_rows(pool, "documents", thread_id="q2", graph="research") == 1


def test_a_researcher_that_plays_its_prompt_back_is_a_failure_not_a_finding(run):
    echo = ("Summarise what the passages say", f"Question: {SUBTASKS[0]}\n\nPassages:\n[1] Checkpoints\nA checkpoint is saved state.")
    runner, events, options = run([PLAN, (f"Question: {SUBTASKS[0]}", echo[1]), SUMMARY, WRITE, REVIEW])
    stop = runner.start("q-echo", TOPIC, options, events.append)
    assert [f["subtask"] for f in stop.values["covered"]] == SUBTASKS[1:]
    assert stop.values["missing"][0]["error"] == "the model returned only its prompt or unsupported sentences"
    writer_prompt = next(p for p in prompts(runner) if WRITE[0] in p)
    assert "Passages:" not in writer_prompt.split("Brief:", 1)[1]


def test_a_subtask_the_planner_copied_from_its_prompt_is_not_researched(run):
    copied = ("Split the research topic", json.dumps({"subtasks": ["Split the research topic into 3 to 5 short questions", *SUBTASKS[:2]]}))
    runner, events, options = run([copied, SUMMARY, WRITE, REVIEW])
    stop = runner.start("q-plan", TOPIC, options, events.append)
    assert stop.values["subtasks"] == SUBTASKS[:2]
    assert "Split the research topic" not in stop.values["document"]


def test_all_researchers_failing_stops_at_the_gate_with_the_failure_explained(run, pool):
    runner, events, options = run([PLAN, ("Summarise what the passages say", RuntimeError("no model")), WRITE, REVIEW])
    stop = runner.start("q3", TOPIC, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["needs_human"] is True
    assert stop.values["error"].startswith("all 3 researchers failed")
    assert RESEARCH.review_content(stop.values).startswith("Nothing to publish: all 3 researchers failed")
    assert not any(WRITE[0] in p for p in prompts(runner)), "no report is written from nothing"
    runner.decide("q3", "approved", actor="bob")
    stop = runner.resume("q3", events.append)
    assert stop.values["outcome"] == "not_published"
    assert count_rows(pool, "documents") == 0


def test_rejecting_a_failed_research_runs_the_researchers_again(run):
    summaries = [RuntimeError("down"), RuntimeError("down"), RuntimeError("down"), SUMMARY[1]]
    runner, events, options = run([PLAN, (SUMMARY[0], summaries), WRITE, REVIEW])
    runner.start("q4", TOPIC, options, events.append)
    runner.decide("q4", "rejected", actor="carol", note="the model is back, try again")
    stop = runner.resume("q4", events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert [f["round"] for f in stop.values["covered"]] == [1, 1, 1]
    assert stop.values["document"].startswith("# Durable workflows")


def test_a_failed_planner_falls_back_to_a_generic_plan(run):
    runner, events, options = run([("Split the research topic", RuntimeError("planner down")), SUMMARY, WRITE, REVIEW])
    stop = runner.start("q5", TOPIC, options, events.append)
    assert len(stop.values["subtasks"]) == 3 and all(TOPIC in s for s in stop.values["subtasks"])
    assert any("planner failed" in w for w in stop.values["warnings"])
    assert stop.gate == "publish" and stop.values["document"]


def test_researchers_run_concurrently(run):
    subtasks = SUBTASKS + ["Why do approvals need deadlines?"]
    delay = 1.0
    with FaultServer() as server:
        server.script(
            ok(json.dumps({"subtasks": subtasks})),
            *[ok("A summary of the passages.", delay=delay) for _ in subtasks],
            ok("# Report\n\nBody."),
            ok('{"score": 0.9, "feedback": "Fine."}'),
        )
        chat = ChatOpenAI(base_url=server.base_url, api_key="test", model="m", max_retries=0, timeout=10)  # type: ignore[arg-type]
        runner, events, options = run(None, models=ModelRegistry(primary=ModelHandle("openai:m", chat)))
        timed: list[tuple[float, dict]] = []
        stop = runner.start("q6", TOPIC, options, lambda e: timed.append((time.monotonic(), e)))
    assert stop.gate == "publish" and len(stop.values["covered"]) == 4
    research = [(t, e) for t, e in timed if e.get("node") == "research"]
    started = min(t for t, e in research if e["event"] == "node_start")
    finished = max(t for t, e in research if e["event"] == "node_end")
    assert all(e["duration"] >= delay for _, e in research if e["event"] == "node_end"), "each waited for its answer"
    assert finished - started < 2.5 * delay, f"4 researchers took {finished - started:.2f}s: they did not overlap"


# --- the live view -------------------------------------------------------------------------


def researcher_events() -> list[dict]:
    return [
        {"event": "node_start", "node": "research", "id": "a"},
        {"event": "node_start", "node": "research", "id": "b"},
        {"event": "researcher_started", "id": "a", "index": 1, "subtask": "What is a checkpoint?"},
        {"event": "researcher_started", "id": "b", "index": 2, "subtask": "What is a saga?"},
        {"event": "node_end", "node": "research", "id": "b", "duration": 1.25, "calls": [], "error": None,
         "update": {"failures": [{"round": 0, "index": 2, "subtask": "What is a saga?", "error": "HTTP 503"}]}},
        {"event": "node_end", "node": "research", "id": "a", "duration": 1.5, "calls": [], "error": None, "update": {"findings": []}},
    ]


def test_piped_output_shows_each_researcher_with_subtask_status_and_duration():
    buffer = io.StringIO()
    printer = ProgressPrinter(Console(file=buffer, force_terminal=False, width=200))
    for event in researcher_events():
        printer(event)
    lines = buffer.getvalue().splitlines()
    assert "  research [1] started: What is a checkpoint?" in lines
    assert any(line.startswith("x research [2] What is a saga?  failed: HTTP 503  1.25s") for line in lines)
    assert any(line.startswith("✓ research [1] What is a checkpoint?  ok  1.50s") for line in lines)


def test_a_terminal_shows_the_researchers_side_by_side_in_a_live_table():
    buffer = io.StringIO()
    printer = ProgressPrinter(Console(file=buffer, force_terminal=True, width=120, color_system=None))
    for event in researcher_events()[:4]:
        printer(event)
    assert printer._live is not None and printer.researchers.running
    for event in researcher_events()[4:]:
        printer(event)
    assert printer._live is None, "the live table closes when the last researcher ends"
    final = buffer.getvalue()
    assert "What is a checkpoint?" in final and "What is a saga?" in final
    assert "failed: HTTP 503" in final and "1.5s" in final


def test_cli_start_research_stops_at_publish_and_approve_publishes_the_report(database_url, tmp_path, pool):
    import re

    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "reports"
    with FaultServer() as server:
        server.script(ok(json.dumps({"subtasks": SUBTASKS})), *[ok("A summary.") for _ in SUBTASKS],
                      ok("# Durable workflows\n\nBody."), ok('{"score": 0.9, "feedback": "Fine."}'))
        env = {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_MODEL": "openai:test-model",
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key"}
        cli = lambda *args: CliRunner().invoke(app, list(args), env=env)  # noqa: E731
        started = cli("start", "research", TOPIC, "--out", str(out))
        assert started.exit_code == 0, started.output
        for n, subtask in enumerate(SUBTASKS, 1):
            assert f"research [{n}] started: {subtask}" in started.output
        assert "waiting at gate publish" in started.output
        tid = re.search(r"^thread (\S+)", started.output, re.M)[1]
        approved = cli("approve", tid, *expect(env["DATABASE_URL"], tid))
    assert approved.exit_code == 0, approved.output
    [path] = out.glob("*.md")
    assert "## Sources" in path.read_text(encoding="utf-8")
    assert count_rows(pool, "documents", thread_id=tid, path=str(path)) == 1
