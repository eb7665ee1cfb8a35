"""No thread is left stuck and no approval is spent on content nobody saw.

- `recover` and `expire` isolate each thread: one broken thread is reported, the rest go on;
- a document whose approved publication fails goes back to its gate instead of dying;
- a command whose reader goes away (`| head -1`) still finishes its work;
- at a terminal, `approve` shows the content and its digest and approves exactly that.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checkpoint import threads
from checkpoint.errors import EXIT_FAILED
from tests.conftest import count_rows, expect, review_digest
from tests.fault_server import FaultServer, ok
from tests.scripted import ANSWERED, CANNOT_ANSWER, REPLY
from tests.procs import ROOT, process_env

ESCALATING = (("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER))


@pytest.fixture
def escalating(server):
    for needle, answer in ESCALATING:
        server.rule(needle, ok(answer))
    return server


def add_thread_of_a_retired_graph(pool, thread_id: str) -> None:
    """A thread row whose graph this version no longer has: every attempt to run it fails."""
    with pool.connection() as conn:
        conn.execute("INSERT INTO threads (thread_id, graph, status, summary, updated_at) "
                     "VALUES (%s, 'retired', 'running', 'old', now() - interval '1 day')", (thread_id,))


def test_recover_reports_a_broken_thread_and_recovers_every_healthy_one(cli, escalating, pool):
    for tid in ("ok-1", "ok-2"):
        assert cli("start", "support", "The app crashes on start", "--thread", tid).exit_code == 0
    with pool.connection() as conn:  # both died after reaching their gate, before saying so
        conn.execute("UPDATE threads SET status = 'running' WHERE thread_id IN ('ok-1', 'ok-2')")
    add_thread_of_a_retired_graph(pool, "broken")  # the oldest: recovered first

    result = cli("recover")
    assert result.exit_code == EXIT_FAILED, result.output
    assert "broken could not be recovered" in result.output and "graph 'retired'" in result.output
    assert "1 of 3 threads not recovered (broken)" in result.output
    assert "Traceback" not in result.output
    assert threads.get(pool, "ok-1").status == "waiting" and threads.get(pool, "ok-2").status == "waiting"


def test_expire_reports_a_broken_thread_and_expires_every_healthy_one(cli, escalating, pool):
    assert cli("start", "support", "The app crashes on start", "--thread", "due").exit_code == 0
    add_thread_of_a_retired_graph(pool, "broken")
    with pool.connection() as conn:
        conn.execute("UPDATE threads SET status = 'waiting', gate = 'review', deadline = now() - interval '1 hour'")

    result = cli("expire")
    assert result.exit_code == EXIT_FAILED, result.output
    assert "broken could not be expired" in result.output
    assert "expired: due (support) -> finished holding" in result.output
    assert count_rows(pool, "outbox", thread_id="due", kind="holding") == 1


def test_an_approved_document_that_cannot_be_written_waits_at_its_gate_again(database_url, pool, tmp_path: Path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "out"
    with FaultServer() as server:
        server.script(ok("# Idempotency keys\n\nThey make retries safe."), ok('{"score": 0.9, "feedback": "Good."}'))
        env = {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_MODEL": "openai:test-model",
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key"}

        def cli(*args: str):
            return CliRunner().invoke(app, list(args), env=env)

        assert cli("start", "revision", "Explain idempotency keys", "--thread", "pub", "--out", str(out)).exit_code == 0
        out.rmdir() if out.exists() else None
        out.write_text("someone put a file where the folder was\n")

        failed = cli("approve", "pub", *expect(database_url, "pub"))
        assert failed.exit_code == 0, failed.output
        assert "waiting at gate publish" in failed.output and "publishing to" in failed.output
        assert threads.get(pool, "pub").status == "waiting"
        assert count_rows(pool, "documents") == 0
        assert count_rows(pool, "audit_events", thread_id="pub", kind="publish_failed") == 1

        out.unlink()  # the folder is fixed: approving again publishes, once
        published = cli("approve", "pub", *expect(database_url, "pub"))
    assert published.exit_code == 0, published.output
    assert "finished: published" in published.output.replace("\n", "")
    assert count_rows(pool, "documents", thread_id="pub") == 1
    assert threads.get(pool, "pub").status == "finished"


def test_approve_whose_output_is_cut_short_still_finishes_the_thread(cli, escalating, env, pool, database_url):
    assert cli("start", "support", "The app crashes on start", "--thread", "piped").exit_code == 0
    digest = review_digest(database_url, "piped")
    shell = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m cli approve piped --expect {digest} | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}'],
        cwd=ROOT, env=process_env(env), capture_output=True, text=True, timeout=120,
    )
    assert shell.returncode == 0, shell.stderr
    assert "Traceback" not in shell.stderr and "Broken pipe" not in shell.stderr, shell.stderr
    assert threads.get(pool, "piped").status == "finished"
    assert count_rows(pool, "outbox", thread_id="piped") == 1


def run_at_terminal(args: list[str], env: dict[str, str], answer: str | None, timeout: float = 60.0) -> tuple[int, str]:
    """Run `signoff ARGS` with a pseudo-terminal as stdin and stdout; type `answer` at its
    question. The exit code and everything it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env={**process_env(env), "TERM": "dumb"},
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    shown, answered = b"", answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if not answered and b"[y/N]" in shown:
                os.write(leader, answer.encode() + b"\n")  # type: ignore[union-attr]
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), shown.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


def test_at_a_terminal_approve_shows_the_content_and_its_digest_and_no_records_nothing(cli, escalating, env, pool, database_url):
    assert cli("start", "support", "The app crashes on start", "--thread", "tty").exit_code == 0
    digest = review_digest(database_url, "tty")
    code, shown = run_at_terminal(["approve", "tty"], env, answer="n")
    assert code == EXIT_FAILED, shown
    assert f"digest {digest}" in shown and "ticket #" in shown, "the content under review, as approve binds it"
    assert "not approved: nothing was recorded" in shown
    assert count_rows(pool, "approvals", thread_id="tty") == 0

    code, shown = run_at_terminal(["approve", "tty"], env, answer="y")
    assert code == 0, shown
    assert threads.get(pool, "tty").status == "finished"
    assert count_rows(pool, "approvals", thread_id="tty", digest=digest) == 1


def test_at_a_terminal_yes_shows_the_content_then_approves_it_without_asking(cli, escalating, env, pool, database_url):
    assert cli("start", "support", "The app crashes on start", "--thread", "tty-yes").exit_code == 0
    digest = review_digest(database_url, "tty-yes")
    code, shown = run_at_terminal(["approve", "tty-yes", "--yes"], env, answer=None)
    assert code == 0, shown
    assert f"digest {digest}" in shown and "[y/N]" not in shown
    assert count_rows(pool, "approvals", thread_id="tty-yes", digest=digest) == 1


def test_an_approval_bound_to_the_first_draft_is_refused_after_a_reject_redrafted_it(cli, server, pool, database_url):
    """The race of approve and reject at once; the reject wins and redrafts. The
    approval named the digest its person saw, so it cannot approve the redraft."""
    server.rule("Classify the customer message", ok('{"intent": "billing"}'))
    server.rule("billing support agent", ok(ANSWERED))
    server.rule(REPLY, ok("A duplicate charge drops off in 3-5 business days."))
    server.rule("Rewrite the support reply", ok("Sorry! A duplicate charge drops off in 3-5 business days."))
    assert cli("start", "support", "I was charged twice this month", "--thread", "race2").exit_code == 0
    seen = expect(database_url, "race2")
    assert cli("reject", "race2", "--feedback", "apologise first").exit_code == 0
    late = cli("approve", "race2", *seen)
    assert late.exit_code != 0 and "content changed since you reviewed it" in late.output
    assert count_rows(pool, "approvals", thread_id="race2", decision="approved") == 0
    assert re.search(r"waiting", threads.get(pool, "race2").status)
