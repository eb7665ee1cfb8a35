"""`pending` as one indexed query: what it lists comes from the threads row the run wrote at
the gate (no checkpoint read), oldest first, paged with --limit, --graph, --older-than."""

from __future__ import annotations

import json

import pytest

from checkpoint.listing import parse_duration
from checkpoint.errors import InvalidInput
from tests.conftest import expect


@pytest.fixture
def server(escalating_server):
    return escalating_server


@pytest.fixture
def waiting(cli, pool):
    """Three support threads at their gate, waiting 3 days, 5 hours and 10 minutes, and a
    revision thread's row as its run writes it at the gate, waiting 2 days."""
    for tid in ("w-old", "w-mid", "w-new"):
        assert cli("start", "support", f"The app crashes ({tid})", "--thread", tid).exit_code == 0
    with pool.connection() as conn:
        for tid, age in (("w-old", "3 days"), ("w-mid", "5 hours"), ("w-new", "10 minutes")):
            conn.execute("UPDATE threads SET updated_at = now() - %s::interval WHERE thread_id = %s", (age, tid))
        conn.execute(
            "INSERT INTO threads (thread_id, graph, status, gate, summary, deadline, digest, review, updated_at) VALUES "
            "('r-1', 'revision', 'waiting', 'publish', '[score 0.90] a brief', now() + interval '1 day', 'abcdef012345', "
            "'# A document', now() - interval '2 days')"
        )


def listed(cli, *args: str) -> dict:
    result = cli("pending", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ids(document: dict) -> list[str]:
    return [row["thread_id"] for row in document["threads"]]


def test_oldest_first_paged_and_filtered(cli, waiting):
    assert ids(listed(cli)) == ["w-old", "r-1", "w-mid", "w-new"]
    first = listed(cli, "--limit", "2")
    assert ids(first) == ["w-old", "r-1"] and first["total"] == 4 and first["limit"] == 2
    assert ids(listed(cli, "--graph", "support")) == ["w-old", "w-mid", "w-new"]
    assert ids(listed(cli, "--graph", "research")) == []
    assert ids(listed(cli, "--older-than", "1h")) == ["w-old", "r-1", "w-mid"]
    assert ids(listed(cli, "--older-than", "1d", "--graph", "support")) == ["w-old"]
    assert listed(cli, "--older-than", "1w") == {"total": 0, "limit": 100, "threads": []}
    table = cli("pending", "--limit", "1")
    assert table.exit_code == 0
    assert "w-old" in table.output and "w-mid" not in table.output
    assert "showing the oldest 1 of 4" in table.output
    assert "abcdef012345" in cli("pending", "--graph", "revision").output


def test_listing_reads_no_checkpoint(cli, waiting, pool, database_url):
    """With LangGraph's checkpoint tables out of reach, pending lists the same page."""
    before = listed(cli)
    with pool.connection() as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            conn.execute(f"ALTER TABLE {table} RENAME TO hidden_{table}")
    try:
        during = listed(cli)
    finally:
        with pool.connection() as conn:
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                conn.execute(f"ALTER TABLE hidden_{table} RENAME TO {table}")
    for document in (before, during):
        for row in document["threads"]:
            row.pop("age_seconds")
    assert during == before
    assert {row["thread_id"]: row["digest"] for row in before["threads"]}["w-mid"] == expect(database_url, "w-mid")[1]


def test_a_thread_waiting_since_before_the_migration_is_listed_with_its_digest_from_the_checkpoint(cli, waiting, pool, database_url):
    stored = json.loads(cli("show", "w-mid", "--json").stdout)["review"]
    with pool.connection() as conn:  # as migration 005 leaves a thread that was already waiting
        conn.execute("UPDATE threads SET digest = NULL, review = NULL WHERE thread_id = 'w-mid'")
    digest = expect(database_url, "w-mid")[1]
    row = next(r for r in listed(cli)["threads"] if r["thread_id"] == "w-mid")
    assert row["digest"] == digest
    shown = json.loads(cli("show", "w-mid", "--json").stdout)
    assert shown["digest"] == digest and shown["review"] == stored and stored
    with pool.connection() as conn:  # reading changed nothing
        assert conn.execute("SELECT digest FROM threads WHERE thread_id = 'w-mid'").fetchone()["digest"] is None
    approved = cli("approve", "w-mid", "--expect", digest)
    assert approved.exit_code == 0, approved.output


def test_the_stored_digest_follows_the_thread_through_a_redraft(cli, server, pool, database_url):
    assert cli("start", "support", "The app crashes", "--thread", "t1").exit_code == 0
    first = listed(cli)["threads"][0]["digest"]
    assert cli("reject", "t1", "--feedback", "apologise first").exit_code == 0
    second = listed(cli)["threads"]
    assert [r["thread_id"] for r in second] == ["t1"] and second[0]["digest"] == expect(database_url, "t1")[1]
    assert cli("approve", "t1", "--expect", second[0]["digest"]).exit_code == 0
    assert listed(cli)["threads"] == []
    with pool.connection() as conn:  # what is under review is kept only while the thread waits
        row = conn.execute("SELECT status, digest, review FROM threads WHERE thread_id = 't1'").fetchone()
    assert row == {"status": "finished", "digest": None, "review": None}
    assert first  # the first draft had a digest too


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800), ("1.5h", 5400), ("2H", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text, "--older-than").total_seconds() == seconds


@pytest.mark.parametrize("text", ["2", "h", "2 h", "-2h", "0m", "2y", "3661d", "1e3h", " 2h", "2h "])
def test_bad_durations(text):
    with pytest.raises(InvalidInput, match="--older-than must be a duration"):
        parse_duration(text, "--older-than")
