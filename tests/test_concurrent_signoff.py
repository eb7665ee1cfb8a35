"""Two sign-offs of one thread at the same moment: exactly one is recorded and applied, the
other is told who decided first. And `--expect DIGEST` guards against approving content that
changed since it was reviewed."""

from __future__ import annotations

import re
import threading
from typing import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from checkpoint.database import open_pool
from checkpoint.migrations import migrate
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from nodes.context import SignoffContext
from nodes.gates import AlreadyDecided
from tests.conftest import FAST_POLICY, count_rows, expect, scratch_database
from tests.fault_server import FaultServer, ok
from tests.procs import spawn_cli, wait_until
from tests.scripted import ANSWERED, REPLY, scripted_registry

BILLING = [
    ("Classify the customer message", '{"intent": "billing"}'),
    ("billing support agent", ANSWERED),
    (REPLY, "A duplicate charge is usually a pending authorization that drops off in 3-5 business days."),
    ("Rewrite the support reply", "Sorry for the trouble: the second charge is a pending authorization."),
]
DECIDED = r"already decided by (\S+) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+"


@pytest.fixture(scope="module")
def shared_pool(server_url: str) -> Iterator[ConnectionPool]:
    """One database for the 50 races (each on its own thread id), to keep them quick."""
    with scratch_database(server_url) as url:
        pool = open_pool(url, max_size=12)
        migrate(pool)
        try:
            yield pool
        finally:
            pool.close()


@pytest.fixture(scope="module")
def context(shared_pool: ConnectionPool) -> SignoffContext:
    return SignoffContext(models=scripted_registry(BILLING), pool=shared_pool, policy=FAST_POLICY)


@pytest.mark.parametrize("attempt", range(50))
def test_two_decisions_at_once_record_exactly_one_and_the_other_is_told_who_won(attempt, shared_pool, context):
    pool, tid = shared_pool, f"race-{attempt}"
    ThreadRunner(pool, SUPPORT, context).start(tid, "I was charged twice this month", {}, lambda e: None)
    deciders = {"alice": ("approved", ""), "bob": ("rejected", "apologise first")}
    runners = {who: ThreadRunner(pool, SUPPORT, context) for who in deciders}  # each its own, as two processes
    barrier = threading.Barrier(len(deciders))
    outcome: dict[str, object] = {}

    def decide(who: str) -> None:
        verdict, note = deciders[who]
        barrier.wait()
        try:
            runners[who].decide(tid, verdict, actor=who, note=note)  # type: ignore[arg-type]
            outcome[who] = "recorded"
        except Exception as exc:  # noqa: BLE001 - the assertion below says what was expected
            outcome[who] = exc

    workers = [threading.Thread(target=decide, args=(who,)) for who in deciders]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    winners = [who for who, result in outcome.items() if result == "recorded"]
    assert len(winners) == 1, outcome
    winner = winners[0]
    loser = next(who for who in deciders if who != winner)
    error = outcome[loser]
    assert isinstance(error, AlreadyDecided), repr(error)
    assert re.fullmatch(DECIDED + rf" \({deciders[winner][0]}\)", str(error)), str(error)
    assert re.match(DECIDED, str(error))[1] == winner  # type: ignore[index]

    with pool.connection() as conn:
        rows = conn.execute("SELECT actor, decision FROM approvals WHERE thread_id = %s", (tid,)).fetchall()
        audited = conn.execute("SELECT actor FROM audit_events WHERE thread_id = %s AND kind LIKE 'decision_%%'", (tid,)).fetchall()
    assert rows == [{"actor": winner, "decision": deciders[winner][0]}]
    assert audited == [{"actor": winner}]

    # The recorded decision is the one applied.
    stop = ThreadRunner(pool, SUPPORT, context).resume(tid, lambda e: None)
    assert stop.values["decisions"][-1]["actor"] == winner
    if winner == "alice":
        assert stop.status == "finished" and stop.values["outcome"] == "replied"
        assert count_rows(pool, "outbox", thread_id=tid) == 1
    else:
        assert (stop.status, stop.values["redrafts"]) == ("waiting", 1)
        assert count_rows(pool, "outbox", thread_id=tid) == 0


# --- through the CLI: two processes ----------------------------------------------------------


@pytest.fixture
def server():
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "billing"}'))
        server.rule("billing support agent", ok(BILLING[1][1]))
        server.rule(REPLY, ok(BILLING[2][1]))
        server.rule("Rewrite the support reply", ok(BILLING[3][1]))
        yield server



def digest_in(output: str) -> str:
    match = re.search(r"digest ([0-9a-f]{12})", output)
    assert match, output
    return match[1]


def test_approve_and_reject_from_two_processes_at_once_record_one_and_the_loser_exits_nonzero(cli, env, database_url, pool):
    assert cli("start", "support", "I was charged twice this month", "--thread", "race").exit_code == 0
    from checkpoint import tokens as reviewer_tokens

    tokens = {name: reviewer_tokens.create(pool, name) for name in ("alice", "bob")}
    # Hold the thread's row so both processes queue on it, then let them go together.
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM threads WHERE thread_id = 'race' FOR NO KEY UPDATE")
        procs = {
            "alice": spawn_cli(["approve", "race", *expect(database_url, "race")], {**env, "SIGNOFF_TOKEN": tokens["alice"]}),
            "bob": spawn_cli(["reject", "race", "--feedback", "apologise first"], {**env, "SIGNOFF_TOKEN": tokens["bob"]}),
        }

        def queued() -> bool:
            with psycopg.connect(database_url, autocommit=True) as conn:
                return conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event IN ('transactionid', 'tuple')"
                ).fetchone()[0] == 2  # type: ignore[index]

        wait_until(queued, what="both deciders waiting on the thread's row")
        holder.rollback()
    codes = {who: proc.wait() for who, proc in procs.items()}

    assert sorted(codes.values())[0] == 0 and sorted(codes.values())[1] != 0, {w: (c, procs[w].output) for w, c in codes.items()}
    winner = next(who for who, code in codes.items() if code == 0)
    loser = procs[next(who for who in procs if who != winner)]
    lines = [line for line in loser.output.splitlines() if line.strip()]
    assert len(lines) == 1, loser.output
    assert re.fullmatch(r"error: " + DECIDED + r" \((approved|rejected)\)", lines[0]), lines[0]
    assert re.search(DECIDED, lines[0])[1] == winner  # type: ignore[index]
    assert count_rows(pool, "approvals", thread_id="race") == 1
    assert count_rows(pool, "approvals", thread_id="race", actor=winner) == 1


# --- what the reviewer saw -------------------------------------------------------------------


def test_pending_and_show_print_the_digest_of_the_content_under_review(cli):
    started = cli("start", "support", "I was charged twice this month", "--thread", "dg")
    digest = digest_in(started.output)
    assert digest in cli("show", "dg").output
    pending = cli("pending")
    assert pending.exit_code == 0
    row = next(line for line in pending.output.splitlines() if line.startswith("dg "))
    assert digest in row, pending.output


def test_approve_expect_refuses_when_the_content_changed_since_it_was_reviewed(cli, pool):
    reviewed = digest_in(cli("start", "support", "I was charged twice this month", "--thread", "dg").output)
    assert cli("reject", "dg", "--feedback", "apologise first").exit_code == 0  # redrafted: new content
    current = digest_in(cli("show", "dg").output)
    assert current != reviewed

    refused = cli("approve", "dg", "--expect", reviewed)
    assert refused.exit_code != 0
    assert len(refused.output.strip().splitlines()) == 1, refused.output
    assert f"content changed since you reviewed it (digest {current}, you expected {reviewed})" in refused.output
    assert count_rows(pool, "approvals", thread_id="dg") == 1, "only the rejection"

    accepted = cli("approve", "dg", "--expect", current)
    assert accepted.exit_code == 0, accepted.output
    assert count_rows(pool, "approvals", thread_id="dg", decision="approved") == 1
    assert count_rows(pool, "outbox", thread_id="dg") == 1
