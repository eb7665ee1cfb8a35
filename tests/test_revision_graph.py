"""The revision loop and publishing, on scripted models and a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint.errors import EXIT_CONFLICT
from graphs.registry import REVISION
from runtime.thread_runner import NotAtGate, ThreadRunner
from nodes.gates import content_digest
from nodes.publishing import publish
from tests.conftest import count_rows, expect
from tests.scripted import REVIEWER, WRITER, review, scripted_registry

BRIEF = "Explain why retries need idempotency keys."


@pytest.fixture
def run(pool, make_context, tmp_path):
    def make(rules, **ctx) -> tuple[ThreadRunner, list[dict], dict]:
        return ThreadRunner(pool, REVISION, make_context(scripted_registry(rules), **ctx)), [], {"out_dir": str(tmp_path / "out")}

    return make


def prompts(runner: ThreadRunner) -> list[str]:
    return runner.context.models.primary.chat.prompts


def published_files(options: dict) -> list[Path]:
    folder = Path(options["out_dir"])
    return sorted(folder.glob("*.md")) if folder.exists() else []


def test_a_draft_that_meets_the_threshold_waits_at_the_publish_gate(run, pool):
    runner, events, options = run([(WRITER, "# Retries\n\nDraft one."), (REVIEWER, review(0.9))])
    stop = runner.start("r1", BRIEF, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["document"] == "# Retries\n\nDraft one."
    assert stop.values["gate_warning"] is None
    assert [e["node"] for e in events if e["event"] == "node_end"] == ["write", "review", "choose_draft"]
    assert count_rows(pool, "documents") == 0 and published_files(options) == []


def test_a_revision_thread_cannot_be_handed_over_and_nothing_is_recorded(run, pool):
    from checkpoint.errors import InvalidInput

    runner, events, options = run([(WRITER, "# Retries\n\nDraft one."), (REVIEWER, review(0.9))])
    runner.start("r-hand", BRIEF, options, events.append)
    with pytest.raises(InvalidInput, match="cannot be handed over to a specialist: reject it with --feedback"):
        runner.decide("r-hand", "rejected", actor="erin", handover=True)
    assert count_rows(pool, "approvals", thread_id="r-hand") == 0
    assert runner.snapshot("r-hand").values.get("decision") is None


def test_reviewer_feedback_reaches_the_next_draft_prompt(run):
    runner, events, options = run([(WRITER, ["First draft.", "Second draft."]), (REVIEWER, [review(0.4, "Mention backoff."), review(0.9)])])
    stop = runner.start("r2", BRIEF, options, events.append)
    assert stop.values["document"].endswith("Second draft.")
    writer_prompts = [p for p in prompts(runner) if WRITER in p]
    assert "Reviewer feedback: Mention backoff." in writer_prompts[1]
    assert "Previous draft:\nFirst draft." in writer_prompts[1]


def test_reaching_the_revision_bound_publishes_the_highest_scoring_draft_with_a_warning(run, pool):
    drafts = ["Draft one.", "Draft two.", "Draft three.", "Draft four."]
    runner, events, options = run([(WRITER, drafts), (REVIEWER, [review(0.3), review(0.7), review(0.5), review(0.4)])])
    stop = runner.start("r3", BRIEF, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["revisions"] == 3, "the default bound is three revisions after the first draft"
    assert stop.values["document"].endswith("Draft two."), "the best draft, not the last"
    assert stop.values["document_score"] == 0.7
    warning = stop.values["gate_warning"]
    assert "threshold" in warning and "score 0.70" in warning
    assert warning in stop.values["warnings"]
    streamed = [w for e in events if e["event"] == "node_end" for w in e["update"].get("warnings", [])]
    assert warning in streamed, "the warning is shown in the stream"

    runner.decide("r3", "approved", actor="alice")
    stop = runner.resume("r3", events.append)
    assert stop.status == "finished" and stop.values["outcome"] == "published"
    [path] = published_files(options)
    assert path.read_text(encoding="utf-8").endswith("Draft two.")
    with pool.connection() as conn:
        row = conn.execute("SELECT body, path, graph FROM documents WHERE thread_id = 'r3'").fetchone()
    assert row["body"].endswith("Draft two.") and row["path"] == str(path) and row["graph"] == "revision"


def test_a_draft_cut_off_mid_sentence_is_revised_whatever_the_reviewer_scores(run):
    cut = "# Retries\n\nA retry sends the same key, so the"
    runner, events, options = run([(WRITER, [cut, "# Retries\n\nA retry sends the same key, so the server answers once."]), (REVIEWER, review(0.9))])
    stop = runner.start("r-cut", BRIEF, options, events.append)
    first, second = stop.values["drafts"]
    assert (first["score"], second["score"]) == (0.4, 0.9), "the text check capped the first draft; the finished one kept its score"
    assert first["feedback"].startswith("The draft stops mid-sentence")
    assert "Reviewer feedback: The draft stops mid-sentence" in [p for p in prompts(runner) if WRITER in p][1]
    assert stop.values["document"].endswith("answers once.")


def test_rejection_feedback_reaches_the_writer_prompt(run):
    runner, events, options = run([(WRITER, ["First draft.", "Rewritten draft."]), (REVIEWER, review(0.9))])
    runner.start("r4", BRIEF, options, events.append)
    runner.decide("r4", "rejected", actor="bob", note="cite the 2019 outage")
    stop = runner.resume("r4", events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["document"].endswith("Rewritten draft.")
    rewrite_prompt = [p for p in prompts(runner) if WRITER in p][-1]
    assert "Editor's feedback (follow it):\n- cite the 2019 outage" in rewrite_prompt
    assert "Previous draft:\nFirst draft." in rewrite_prompt
    assert "cite the 2019 outage" in [p for p in prompts(runner) if REVIEWER in p][-1], "the reviewer checks it too"


def test_a_rejected_draft_never_wins_the_next_round(run):
    # Round 0 ends at the bound with "Old best" (0.7); after the rejection every new draft scores lower.
    writer = ["Old best.", "Old worse.", "New one.", "New two."]
    scores = [review(0.7), review(0.2), review(0.5), review(0.6)]
    runner, events, options = run([(WRITER, writer), (REVIEWER, scores)], max_revisions=1)
    stop = runner.start("r5", BRIEF, options, events.append)
    assert stop.values["document"].endswith("Old best.")
    runner.decide("r5", "rejected", actor="bob", note="shorter")
    stop = runner.resume("r5", events.append)
    assert stop.values["document"].endswith("New two.")
    assert stop.values["revisions"] == 1, "the revision budget starts afresh each round"


def test_a_rewrite_identical_to_the_rejected_draft_is_revised_again(run):
    runner, events, options = run([(WRITER, ["# Keys\n\nSame.", "# Keys\n\nSame.", "# Keys\n\nNew."]), (REVIEWER, review(0.9))])
    first = runner.start("r-same", BRIEF, options, events.append)
    runner.decide("r-same", "rejected", actor="bob", note="add an example")
    stop = runner.resume("r-same", events.append)
    assert stop.values["document"] == "# Keys\n\nNew." and "check:" not in REVISION.review_content(stop.values)
    assert stop.values["document"] != first.values["document"]
    assert any("Reviewer feedback: This is the draft the editor rejected, unchanged" in p for p in prompts(runner) if WRITER in p)


def test_a_rewrite_that_stays_identical_to_the_rejected_draft_is_flagged_at_the_gate(run):
    runner, events, options = run([(WRITER, "# Keys\n\nSame."), (REVIEWER, review(0.9))])
    first = runner.start("r-stuck", BRIEF, options, events.append)
    runner.decide("r-stuck", "rejected", actor="bob", note="add an example")
    stop = runner.resume("r-stuck", events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["document"] == first.values["document"]
    content = REVISION.review_content(stop.values)
    assert content.startswith("check: this is a document you already rejected, word for word")
    assert content_digest(content) != expect_digest(first), "never offered again under the digest it was rejected with"


def expect_digest(stop) -> str:
    return content_digest(REVISION.review_content(stop.values))


def test_a_writer_that_plays_its_prompt_back_puts_no_prompt_text_at_the_gate(run):
    echo = f"Brief: {BRIEF}\n\nEditor's feedback (follow it):\n- add an example\n\nPrevious draft:\n# Keys\n\nDraft one.\n\nWrite an improved version."
    runner, events, options = run([(WRITER, ["# Keys\n\nDraft one.", echo]), (REVIEWER, review(0.9))])
    runner.start("r-echo", BRIEF, options, events.append)
    runner.decide("r-echo", "rejected", actor="bob", note="add an example")
    stop = runner.resume("r-echo", events.append)
    content = REVISION.review_content(stop.values)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert "Brief:" not in content and "Editor's feedback" not in content and "Write an improved version" not in content, content
    assert content.startswith("Nothing to publish: write: the model returned only its prompt")


def test_rejections_past_the_bound_end_the_thread_unpublished(run, pool):
    runner, events, options = run([(WRITER, "A draft."), (REVIEWER, review(0.9))], max_redrafts=1)
    runner.start("r6", BRIEF, options, events.append)
    for _ in range(2):  # one rewrite is allowed; the second rejection ends it
        runner.decide("r6", "rejected", actor="carol", note="no")
        stop = runner.resume("r6", events.append)
    assert stop.status == "finished"
    assert stop.values["outcome"] == "not_published"
    assert "rejected 2 times" in stop.values["reason"]
    assert count_rows(pool, "documents") == 0 and published_files(options) == []


def test_an_expired_publish_gate_does_not_publish(run, pool):
    runner, events, options = run([(WRITER, "A draft."), (REVIEWER, review(0.9))])
    runner.start("r9", BRIEF, options, events.append)
    runner.decide("r9", "expired", actor="signoff (deadline)")
    stop = runner.resume("r9", events.append)
    assert stop.values["outcome"] == "not_published" and "expired" in stop.values["reason"]
    assert count_rows(pool, "documents") == 0 and published_files(options) == []


def test_publish_writes_exactly_once_even_when_approve_is_run_twice(run, pool):
    runner, events, options = run([(WRITER, "# Keys\n\nOne draft."), (REVIEWER, review(0.95))])
    runner.start("r7", BRIEF, options, events.append)
    runner.decide("r7", "approved", actor="dan")
    runner.resume("r7", events.append)
    [path] = published_files(options)
    written_at = path.stat().st_mtime_ns
    with pytest.raises(NotAtGate):
        runner.decide("r7", "approved", actor="erin")
    assert runner.resume("r7", events.append).status == "finished"  # a stray resume runs nothing again
    assert count_rows(pool, "documents", thread_id="r7") == 1
    assert published_files(options) == [path] and path.stat().st_mtime_ns == written_at
    assert count_rows(pool, "audit_events", thread_id="r7", kind="document_published") == 1


def test_publishing_again_keeps_the_first_document_at_the_same_path(pool, tmp_path):
    first = publish(pool, "t-pub", graph="revision", body="# Title\n\nFirst.", out_dir=str(tmp_path))
    first.path.unlink()  # as if the process died after the commit and the file got lost
    again = publish(pool, "t-pub", graph="revision", body="# Other title\n\nSecond.", out_dir=str(tmp_path))
    assert (again.created, again.path, again.document_id) == (False, first.path, first.document_id)
    assert again.path.read_text(encoding="utf-8") == "# Title\n\nFirst."
    assert list(tmp_path.iterdir()) == [first.path], "no temporary files left behind"


def test_a_writer_that_fails_stops_at_the_gate_with_nothing_to_publish(run, pool):
    runner, events, options = run([(WRITER, RuntimeError("model down"))])
    stop = runner.start("r8", BRIEF, options, events.append)
    assert (stop.status, stop.gate) == ("waiting", "publish")
    assert stop.values["needs_human"] is True and "model down" in stop.values["error"]
    assert REVISION.review_content(stop.values).startswith("Nothing to publish")
    runner.decide("r8", "approved", actor="frank")
    stop = runner.resume("r8", events.append)
    assert stop.values["outcome"] == "not_published"
    assert count_rows(pool, "documents") == 0


def test_cli_start_revision_stops_at_publish_and_approve_publishes_file_and_row(database_url, tmp_path, pool):
    import re

    from typer.testing import CliRunner

    from cli import app
    from tests.fault_server import FaultServer, ok

    home = tmp_path / "home"
    with FaultServer() as server:
        server.script(ok("# Idempotency keys\n\nThey make retries safe."), ok('{"score": 0.9, "feedback": "Good."}'))
        env = {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(home), "SIGNOFF_MODEL": "openai:test-model",
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key"}
        cli = lambda *args: CliRunner().invoke(app, list(args), env=env)  # noqa: E731
        started = cli("start", "revision", BRIEF)
        assert started.exit_code == 0, started.output
        assert "waiting at gate publish" in started.output
        tid = re.search(r"^thread (\S+)", started.output, re.M)[1]
        digest = expect(env["DATABASE_URL"], tid)
        approved = cli("approve", tid, *digest)
        again = cli("approve", tid, *digest)
    assert approved.exit_code == 0, approved.output
    [path] = (home / "published").glob("*.md")
    assert f"finished: published {path}" in approved.output.replace("\n", "")
    assert path.read_text(encoding="utf-8") == "# Idempotency keys\n\nThey make retries safe."
    assert count_rows(pool, "documents", thread_id=tid) == 1
    assert again.exit_code == EXIT_CONFLICT and "not waiting at a gate" in again.output
