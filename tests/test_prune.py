"""`signoff db prune`: finished threads keep only their last checkpoint; nothing else changes,
and a thread that is waiting or running (in a real process, mid model call) is never touched."""

from __future__ import annotations

import json
import threading

import pytest

from checkpoint.retention import prune_finished
from tests.conftest import count_rows, expect
from tests.fault_server import held, ok
from tests.procs import spawn_cli, wait_until

KEPT_TABLES = ("threads", "approvals", "audit_events", "tickets", "outbox")


@pytest.fixture
def server(escalating_server):
    return escalating_server


def checkpoint_rows(pool, thread_id: str) -> dict[str, list[tuple]]:
    """Every checkpoint-table row of a thread, by key (what prune could delete or change)."""
    with pool.connection() as conn:
        return {
            "checkpoints": [tuple(r.values()) for r in conn.execute(
                "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints WHERE thread_id = %s ORDER BY 1, 2", (thread_id,))],
            "writes": [tuple(r.values()) for r in conn.execute(
                "SELECT checkpoint_ns, checkpoint_id, task_id, idx FROM checkpoint_writes WHERE thread_id = %s ORDER BY 1, 2, 3, 4", (thread_id,))],
            "blobs": [tuple(r.values()) for r in conn.execute(
                "SELECT checkpoint_ns, channel, version FROM checkpoint_blobs WHERE thread_id = %s ORDER BY 1, 2, 3", (thread_id,))],
        }


def event_ids(pool, thread_id: str) -> set[tuple[int, str]]:
    """A thread's progress events (id, kind): the running thread adds some as it goes."""
    with pool.connection() as conn:
        return {(r["id"], r["kind"]) for r in conn.execute(
            "SELECT id, event->>'event' AS kind FROM progress_events WHERE thread_id = %s", (thread_id,))}


def finish(cli, database_url: str, thread_id: str) -> None:
    assert cli("start", "support", "The app crashes on start", "--thread", thread_id).exit_code == 0
    result = cli("approve", thread_id, *expect(database_url, thread_id))
    assert result.exit_code == 0, result.output


def test_prune_keeps_the_last_checkpoint_of_finished_threads_and_never_touches_a_running_or_waiting_one(cli, env, pool, database_url, server):
    finish(cli, database_url, "done-1")
    finish(cli, database_url, "done-2")
    assert cli("start", "support", "The app crashes on start", "--thread", "waiting-1").exit_code == 0
    shown_before = json.loads(cli("show", "done-1", "--json").output)

    # A run in a real process, stopped inside its first model call (checkpoints already saved).
    release = threading.Event()
    seen = server.matching("Classify the customer message")
    server.once("Classify the customer message", held(release))
    running = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "running-1"], env)
    try:
        wait_until(lambda: server.matching("Classify the customer message") > seen, what="the running thread's model call")
        assert len(checkpoint_rows(pool, "running-1")["checkpoints"]) >= 2, "the running thread has history prune could take"
        wait_until(lambda: event_ids(pool, "running-1"), what="the running thread's first progress events")
        untouched = {tid: checkpoint_rows(pool, tid) for tid in ("waiting-1", "running-1")}
        events_seen = {tid: event_ids(pool, tid) for tid in ("waiting-1", "running-1")}
        assert all(events_seen.values()), "the waiting and the running thread have progress events prune could take"
        kept = {table: count_rows(pool, table) for table in KEPT_TABLES}
        finished_before = {tid: checkpoint_rows(pool, tid) for tid in ("done-1", "done-2")}
        assert all(len(rows["checkpoints"]) > 2 for rows in finished_before.values())

        result = cli("db", "prune", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)

        for tid, rows in untouched.items():
            assert checkpoint_rows(pool, tid) == rows, f"{tid} was touched"
            assert events_seen[tid] <= event_ids(pool, tid), f"{tid}'s progress events were touched"
        for tid in ("done-1", "done-2"):
            assert [kind for _, kind in sorted(event_ids(pool, tid))] == ["stop"], "a finished thread keeps its last stop only"
        assert {table: count_rows(pool, table) for table in KEPT_TABLES} == kept
        for tid, before in finished_before.items():
            after = checkpoint_rows(pool, tid)
            assert after["checkpoints"] == [max(before["checkpoints"], key=lambda r: r[1])[:2] + (None,)]
        assert report["threads"] == 2 and report["dry_run"] is False and report["skipped"] == []
        deleted = sum(len(before["checkpoints"]) - 1 for before in finished_before.values())
        assert report["rows"]["checkpoints"] == deleted and report["bytes"] > 0
    finally:
        release.set()
        assert running.wait() == 0, running.output

    # The pruned thread reads as before; the run that went on reached its gate intact.
    assert json.loads(cli("show", "done-1", "--json").output) == shown_before
    assert cli("audit", "done-1").exit_code == 0
    assert json.loads(cli("show", "running-1", "--json").output)["gate"] == "review"
    approved = cli("approve", "running-1", *expect(database_url, "running-1"))
    assert approved.exit_code == 0, approved.output
    assert cli("db", "prune").exit_code == 0
    assert len(checkpoint_rows(pool, "running-1")["checkpoints"]) == 1
    assert count_rows(pool, "outbox", thread_id="running-1") == 1


def test_dry_run_deletes_nothing_and_names_what_the_prune_then_frees(cli, pool, database_url):
    finish(cli, database_url, "done-1")
    before = checkpoint_rows(pool, "done-1")
    dry = cli("db", "prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert checkpoint_rows(pool, "done-1") == before
    estimate = json.loads(dry.output)
    real = json.loads(cli("db", "prune", "--json").output)
    assert estimate["dry_run"] is True and estimate["threads"] == real["threads"] == 1
    assert estimate["rows"] == real["rows"]
    # The prune also clears the kept checkpoint's parent link (its id, a few dozen bytes).
    assert 0 < estimate["bytes"] <= real["bytes"] <= estimate["bytes"] + 64
    again = cli("db", "prune")
    assert again.exit_code == 0 and "nothing to prune" in again.output


def test_finished_older_than_leaves_recent_threads_alone(cli, pool, database_url):
    finish(cli, database_url, "done-1")
    before = checkpoint_rows(pool, "done-1")
    result = cli("db", "prune", "--finished-older-than", "1")
    assert result.exit_code == 0 and "nothing to prune" in result.output, result.output
    assert checkpoint_rows(pool, "done-1") == before
    with pool.connection() as conn:  # the thread finished two days ago
        conn.execute("UPDATE threads SET updated_at = now() - interval '2 days' WHERE thread_id = 'done-1'")
    result = cli("db", "prune", "--finished-older-than", "1.5")
    assert result.exit_code == 0 and "pruned 1 finished thread:" in result.output, result.output
    assert len(checkpoint_rows(pool, "done-1")["checkpoints"]) == 1


def test_the_worker_facing_function_prunes_at_most_limit_threads_per_call(cli, pool, database_url):
    for tid in ("done-1", "done-2", "done-3"):
        finish(cli, database_url, tid)
    first = prune_finished(pool, limit=2)
    assert first.threads == 2
    assert sorted(len(checkpoint_rows(pool, t)["checkpoints"]) == 1 for t in ("done-1", "done-2", "done-3")) == [False, True, True]
    second = prune_finished(pool, limit=2)  # pruned threads are not candidates again
    assert second.threads == 1
    assert prune_finished(pool).threads == 0
