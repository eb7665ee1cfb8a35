"""The research corpus: chunking, idempotent ingest, search, and the `corpus` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from nodes.corpus import (
    MAX_CHUNK_CHARS, CorpusError, chunk_text, collect, ensure_corpus, ingest, list_documents, parse_file, search,
    shipped_corpus_dir,
)
from checkpoint.errors import EXIT_NOT_FOUND
from nodes.knowledge import PathNotFound
from tests.conftest import count_rows

ARTICLE = """# Tea Brewing

Tea is steeped leaves.

## Water temperature

Green tea wants water around 80 degrees.

Black tea wants boiling water.

## Steeping time

Three minutes is typical.
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_markdown_is_chunked_by_section_with_the_title_in_each_heading():
    chunks = chunk_text(ARTICLE, "Tea Brewing")
    assert [c.heading for c in chunks] == ["Tea Brewing", "Tea Brewing - Water temperature", "Tea Brewing - Steeping time"]
    assert chunks[1].body == "Green tea wants water around 80 degrees.\n\nBlack tea wants boiling water."


def test_a_long_paragraph_is_split_at_sentence_ends_within_the_limit():
    paragraph = " ".join(f"Sentence number {n} says something about durable execution." for n in range(60))
    chunks = chunk_text(paragraph, "Long")
    assert len(chunks) > 1
    assert all(len(c.body) <= MAX_CHUNK_CHARS for c in chunks)
    assert all(c.body.endswith(".") for c in chunks)
    assert " ".join(c.body for c in chunks) == paragraph


def test_title_comes_from_front_matter_then_heading_then_file_name(tmp_path):
    assert parse_file(write(tmp_path, "a.md", "---\ntitle: From Front Matter\n---\n# Heading\n\nBody.")).title == "From Front Matter"
    assert parse_file(write(tmp_path, "b.md", ARTICLE)).title == "Tea Brewing"
    assert parse_file(write(tmp_path, "green-tea_notes.txt", "Plain notes.")).title == "Green tea notes"


def test_adding_the_same_content_twice_changes_nothing(pool, tmp_path):
    files = collect([write(tmp_path, "tea.md", ARTICLE)])
    first = ingest(pool, files)
    (tmp_path / "copy").mkdir()
    again = ingest(pool, collect([write(tmp_path / "copy", "tea-copy.md", ARTICLE)]))
    assert (first.added, first.chunks) == (1, 3)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 1, 0), "same hash under another name"
    assert count_rows(pool, "corpus_documents") == 1 and count_rows(pool, "corpus_chunks") == 3


def test_a_changed_file_replaces_its_chunks(pool, tmp_path):
    ingest(pool, collect([write(tmp_path, "tea.md", ARTICLE)]))
    report = ingest(pool, collect([write(tmp_path, "tea.md", "# Tea Brewing\n\nOolong is partly oxidised.")]))
    assert (report.added, report.updated) == (0, 1)
    assert count_rows(pool, "corpus_chunks") == 1
    assert search(pool, "green temperature") == []
    assert search(pool, "oolong")[0].source == "tea"


def test_search_returns_the_best_passages_with_their_source(pool, tmp_path):
    ingest(pool, collect([write(tmp_path, "tea.md", ARTICLE), write(tmp_path, "coffee.txt", "Coffee wants a fine grind.")]))
    [best, *_] = search(pool, "what water temperature for green tea?")
    assert (best.source, best.heading) == ("tea", "Tea Brewing - Water temperature")
    assert best.citation == 'Tea Brewing, "Water temperature" (corpus: tea)'
    assert [p.source for p in search(pool, "grind")] == ["coffee"]


def test_bad_files_are_refused_before_anything_is_written(pool, tmp_path):
    good = write(tmp_path, "good.md", ARTICLE)
    binary = tmp_path / "bad.md"
    binary.write_bytes(b"\xff\xfe\x00bad")
    nul = tmp_path / "nul.md"
    nul.write_bytes(b"# Title\n\ntext\x00more\n")
    for paths, error, message in (([good, binary], CorpusError, "not UTF-8"), ([good, tmp_path / "nope.md"], PathNotFound, "no such file"),
                                  ([write(tmp_path, "x.pdf", "%PDF")], CorpusError, "not a markdown or text file"),
                                  ([write(tmp_path, "empty.txt", "  \n")], CorpusError, "empty file"),
                                  ([good, nul], CorpusError, "contains NUL bytes")):
        with pytest.raises(error, match=message):
            ingest(pool, collect(paths))
    assert count_rows(pool, "corpus_documents") == 0


def test_the_sample_corpus_is_loaded_only_into_an_empty_corpus(pool, tmp_path):
    ingest(pool, collect([write(tmp_path, "tea.md", ARTICLE)]))
    ensure_corpus(pool)
    assert [e.source for e in list_documents(pool)] == ["tea"]


def test_the_sample_corpus_covers_two_topics():
    titles = [f.title for f in collect([shipped_corpus_dir()])]
    assert len(titles) == 8
    assert any("Approval" in t for t in titles) and any("Checkpoint" in t for t in titles)


# --- the commands --------------------------------------------------------------------------


@pytest.fixture
def cli(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "SIGNOFF_HOME": str(tmp_path / "home")}
    return lambda *args: CliRunner().invoke(app, list(args), env=env)


def test_corpus_add_without_paths_loads_the_sample_once_and_list_shows_it(cli):
    first = cli("corpus", "add")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("8 added, 0 updated, 0 unchanged")
    assert cli("corpus", "add").output.startswith("0 added, 0 updated, 8 unchanged (0 chunks written)")
    listing = cli("corpus", "list")
    assert listing.exit_code == 0
    assert "durable-saga-compensation" in listing.output and "The Saga Pattern and Compensation" in listing.output


def test_corpus_add_of_a_missing_path_is_one_line_not_found(cli, tmp_path):
    result = cli("corpus", "add", str(tmp_path / "missing.md"))
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.output.strip().startswith("error:") and "no such file or folder" in result.output
    assert "Traceback" not in result.output


def test_corpus_list_of_an_empty_corpus_says_how_to_fill_it(cli):
    result = cli("corpus", "list")
    assert result.exit_code == 0 and "signoff corpus add" in result.output
