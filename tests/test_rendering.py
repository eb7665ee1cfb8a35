"""Untrusted text is shown, never obeyed: every command renders content from customers, models,
notes and files with its control characters made visible, one record per line.

One hostile string goes through every place content enters (the message, the model's answer,
a reviewer's note, a knowledge-base article, a corpus file's name and title) and out of every
command that prints it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from console.display import safe, safe_line, visible
from tests.conftest import expect
from tests.fault_server import ok
from tests.scripted import ANSWERED, REPLY

#: Clear screen, conceal, a terminal hyperlink, a bell, a bidi override, and a newline that
#: would start a forged row in a listing.
HOSTILE = "\x1b[2J\x1b[8mhidden\x1b[0m \x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \u202eevil\u202c\nfake-1  support  review  0s  -  000000000000  forged row"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e]")


def assert_inert(text: str) -> None:
    assert not RAW.search(text), repr(RAW.search(text))
    assert "hidden" not in text or re.search(r"(\\x1b|\\u001b)\[8mhidden", text), "the escape is shown as text"


def test_visible_shows_every_control_character_and_keeps_the_text():
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("one\ntwo\tthree") == "one\ntwo\tthree"
    assert visible("one\ntwo\tthree", one_line=True) == "one\\ntwo\\tthree"
    assert visible("\u202eabc\x00\x7f\x9b") == "\\u202eabc\\x00\\x7f\\x9b"
    assert visible("caf\udce9") == "caf\\udce9", "bytes that were not UTF-8 do not break printing"


def test_rich_markup_in_content_stays_literal():
    assert safe("[red]x[/red]").startswith("\\[red]")
    assert safe_line("[link=http://evil]x") == "\\[link=http://evil]x"
    assert safe_line("abcdef", limit=4) == "abc…"


@pytest.fixture
def hostile_server(server):
    server.rule("Classify the customer message", ok('{"intent": "billing"}'))
    server.rule("billing support agent", ok(ANSWERED))
    server.rule(REPLY, ok("Refunds take 5 days. " + HOSTILE))
    return server


def test_every_command_that_prints_content_renders_it_inert(cli, hostile_server, database_url, tmp_path: Path):
    started = cli("start", "support", HOSTILE, "--thread", "h1", "--email", "a\x1b[8m@example.com")
    assert started.exit_code == 0, started.output
    second = cli("start", "support", "plain question about my invoice", "--thread", "h2")
    assert second.exit_code == 0, second.output

    pending = cli("pending")
    assert pending.exit_code == 0, pending.output
    rows = [line for line in pending.output.splitlines() if line.strip()]
    assert len(rows) == 3, f"a header and one line per thread, no forged row:\n{pending.output}"
    assert not any(line.startswith("fake-1") for line in rows)

    shown = cli("show", "h1")
    approved = cli("approve", "h1", "--note", "ok \x1b[2J" + HOSTILE, *expect(database_url, "h1"))
    assert approved.exit_code == 0, approved.output
    audit = cli("audit", "h1")
    for result in (started, pending, shown, approved, audit):
        assert_inert(result.output)
    audit_lines = [line for line in audit.output.splitlines()[1:] if line.strip()]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line) for line in audit_lines), audit.output


def test_knowledge_base_and_corpus_listings_render_file_content_inert(cli, tmp_path: Path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "billing-evil.md").write_text(f"---\ntitle: Refunds \x1b[31mred\x1b]8;;http://x\x07\ncategory: billing\n---\nRefunds and charges explained.\n")
    assert cli("kb", "load", str(kb)).exit_code == 0
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "evil\nname\x1b[2J.md").write_text("# Title \x1b[8mhidden\n\nSome text about approvals.\n")
    added = cli("corpus", "add", str(corpus))
    assert added.exit_code == 0, added.output
    searched = cli("kb", "search", "refunds charges")
    listed = cli("corpus", "list")
    for result in (searched, listed):
        assert result.exit_code == 0, result.output
        assert_inert(result.output)
    assert len([line for line in listed.output.splitlines() if line.strip()]) == 1, listed.output


def test_config_never_prints_a_password_in_any_url_form(cli, env):
    from typer.testing import CliRunner

    from cli import app

    for url in ("postgresql://u:hunter2@db/x", "postgresql://u@db/x?password=hunter2", "host=db user=u password=hunter2 dbname=x",
                "host=db password='hunter2 and more' dbname=x"):
        result = CliRunner().invoke(app, ["config"], env={**env, "DATABASE_URL": url})
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output and "***" in result.output, result.output


def test_a_piped_node_line_is_one_line_however_long():
    """Log readers grep these lines: rich's 80-column wrap for non-terminals must not break them."""
    import io

    from rich.console import Console

    from console.progress import ProgressPrinter

    buffer = io.StringIO()
    calls = [{"node": "classify", "model": "local:" + "m" * 60, "attempts": 1, "latency_ms": 1280, "input_tokens": 225, "output_tokens": 6, "error": None}]
    ProgressPrinter(Console(file=buffer, width=80))({"event": "node_end", "node": "classify", "duration": 1.28, "calls": calls})
    [line] = buffer.getvalue().splitlines()
    assert line.startswith("✓ classify") and line.rstrip().endswith("tokens=225/6"), line


def test_a_review_left_to_the_person_shows_as_skipped_not_ok():
    import io

    from rich.console import Console

    from console.progress import ProgressPrinter

    buffer = io.StringIO()
    update = {"not_reviewed": "not scored: local:qwen2.5-coder-0.5b-instruct cannot tell a good draft from a poor one"}
    ProgressPrinter(Console(file=buffer, width=200))({"event": "node_end", "node": "review", "duration": 0.0, "calls": [], "update": update})
    [line] = buffer.getvalue().splitlines()
    assert line.split()[:3] == ["-", "review", "skipped"], line
