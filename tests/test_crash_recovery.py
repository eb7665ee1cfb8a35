"""Never lose work: SIGKILL the CLI at every point of every graph, then recover and finish.

Each scenario is a thread's life as a person drives it (start, approve, reject, expire), one
CLI command per phase. A kill point is a moment inside one phase's process:

- after   right after it prints `✓ NODE` (a node boundary; its checkpoint may or may not be saved)
- model   inside a model call (the fault server holds the request; its arrival is the signal)
- write   inside a side-effect write (a trigger in the test's database holds the INSERT),
          which then lands, as a write the dying process had already sent
- step    a node finished but its step is not checkpointed (the model answer is held, the
          checkpoint INSERT armed, then the answer let go); a task whose writes were saved
          must not run again
- settle  after the last checkpoint, before the threads table says where the thread stands
- pay / paid   inside a payment provider call of a refund saga step, before / after the
          provider committed it (the fake provider holds the request; its arrival is the signal)
- undecided / unapplied / unresumed   an approve/reject/expire process killed before its
          decision is recorded / after it is recorded but before it is written into the
          thread / after both but before the thread runs on

The process is killed from here (SIGKILL), never by a hook in product code. Then the test
does what a person would (resume, recover, or decide again when the decision never reached
the database), asserting that the other action is refused, and drives the thread to its end.
Every kill point must end with the thread finished, exactly one of each side effect, one
decision per gate visit, and each decision and side effect audited once.

The phases a scenario runs are checked against an unkilled run (test_scenario_prints_...),
and every registered graph must have a scenario covering its nodes, so a new graph or node
cannot slip past this file.
"""

from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg_pool import ConnectionPool
import pytest

from checkpoint import threads, tokens
from checkpoint.identity import os_user
from cli import start_app
from graphs.registry import GRAPHS, get_spec
from runtime.thread_runner import EXPIRY_ACTOR, ThreadRunner
from tests.conftest import count_rows, expect, review_digest
from tests.fault_server import FaultServer, held, ok, prompt_text
from tests.scripted import ANSWERED, CANNOT_ANSWER, REPLY
from tests.payment_provider import PaymentProvider
from tests.procs import StatementBlock, WarmCli, sessions_named, spawn_cli, wait_until
from tests.refund_fixtures import OWNER, REFUND_MESSAGE

USER = os_user()  # who starts and decides, unless a phase says otherwise
VICTIM = "signoff-victim"
NODE_LINE = re.compile(r"^[✓x] (\S+)\s")


# --- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    args: tuple[str, ...]  # CLI arguments; {tid}, {out} and {digest} (of the content at the gate) are filled in
    nodes: tuple[str, ...]  # the `✓ node` lines it prints, in order
    decision: str | None = None  # the verdict it records, for approve/reject/expire
    writes: tuple[str, ...] = ()  # tables it inserts side effects into
    past_deadline: bool = False  # set the gate's deadline in the past first (expire)
    by: str = USER  # who decides (a refund's requester may not approve it): another reviewer acts through a token

    @property
    def verb(self) -> str:
        return self.args[0]

    @property
    def actor(self) -> str:
        return EXPIRY_ACTOR if self.decision == "expired" else self.by

    def argv(self, tid: str, out: Path, database_url: str) -> list[str]:
        digest = review_digest(database_url, tid) if "{digest}" in self.args else ""
        return [a.format(tid=tid, out=out, digest=digest) for a in self.args]


@dataclass(frozen=True)
class Scenario:
    name: str
    graph: str
    rules: tuple[tuple[str, str], ...]  # (needle in the prompt, model answer), first match wins
    model_nodes: dict[str, str]  # node -> needle of its (first) model request
    phases: tuple[Phase, ...]
    effects: dict[str, int]  # table -> rows for the thread at the end
    audit: dict[str, int]  # audit event kind -> count at the end
    outcome: str  # in the finished thread's outcome line
    #: a model node to kill after, its step not checkpointed, and a needle found in the
    #: prompts of that step's model calls (and in no other), to count them
    step_node: tuple[str, str] = ("", "")
    check: Callable[[dict, psycopg.Connection, Path], None] = lambda values, conn, out: None
    #: run on the test's database before the first phase (never killed)
    setup: Callable[[ConnectionPool], None] | None = None
    #: payment provider: faults queued per operation for the first calls, faults for every call,
    #: the saga node -> the operation it calls, and what the provider holds at the end
    #: ("credit_note:void" counts credit notes with that status)
    provider_faults: tuple[tuple[str, str], ...] = ()
    provider_always: tuple[tuple[str, str], ...] = ()
    pay_nodes: tuple[tuple[str, str], ...] = ()
    provider_effects: tuple[tuple[str, int], ...] = ()
    #: every kill point of this scenario, also those another scenario of its graph covered
    #: (the refund paths: money must move once also where the reply path was already safe)
    all_points: bool = False


BILLING_ANSWER = "A second charge is usually a pending authorization that drops off within 3-5 business days."
SUBTASKS = ["How do checkpoints make a run durable?", "What are idempotency keys for?", "How do approval gates and deadlines work?"]
REPORT = "# Durable agent workflows\n\nCheckpoints, idempotency keys and approval gates keep work safe."


def _ticket_status(expected: str) -> Callable[[dict, psycopg.Connection, Path], None]:
    def check(values: dict, conn: psycopg.Connection, out: Path) -> None:
        assert conn.execute("SELECT status FROM tickets WHERE thread_id = %s", (values["_tid"],)).fetchone()[0] == expected

    return check


def _published(values: dict, conn: psycopg.Connection, out: Path) -> None:
    path, body = conn.execute("SELECT path, body FROM documents WHERE thread_id = %s", (values["_tid"],)).fetchone()
    assert Path(path).read_text(encoding="utf-8") == body
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [Path(path).name], "one file, no leftovers"


def _researched_once(values: dict, conn: psycopg.Connection, out: Path) -> None:
    _published(values, conn, out)
    assert sorted(f["index"] for f in values["findings"]) == [1, 2, 3], "each researcher's finding kept once"


SCENARIOS = [
    Scenario(
        name="support-escalated",
        graph="support",
        rules=(("Classify the customer message", '{"intent": "technical"}'), ("technical support agent", CANNOT_ANSWER)),
        model_nodes={"classify": "Classify the customer message", "technical_agent": "technical support agent"},
        phases=(
            Phase(("start", "support", "The sync engine corrupts my notes", "--thread", "{tid}", "--email", "a@example.com"),
                  ("classify", "technical_agent", "escalate"), writes=("kb_articles", "tickets")),
            Phase(("approve", "{tid}", "--note", "fine", "--expect", "{digest}"), ("review", "send_approved_reply"), decision="approved", writes=("outbox",)),
        ),
        effects={"tickets": 1, "outbox": 1},
        audit={"thread_started": 1, "ticket_opened": 1, "reply_sent": 1, "decision_approved": 1},
        outcome="replied",
        step_node=("technical_agent", "technical support agent"),
        check=_ticket_status("resolved"),
    ),
    Scenario(
        name="support-answered",
        graph="support",
        rules=(
            ("Classify the customer message", '{"intent": "billing"}'),
            ("billing support agent", ANSWERED),
            (REPLY, BILLING_ANSWER),
            ("Rewrite the support reply", "Sorry for the trouble: the second charge is a pending authorization."),
        ),
        model_nodes={"classify": "Classify the customer message", "billing_agent": "billing support agent", "redraft": "Rewrite the support reply"},
        phases=(
            Phase(("start", "support", "I was charged twice this month", "--thread", "{tid}"), ("classify", "billing_agent", "draft_reply")),
            Phase(("reject", "{tid}", "--feedback", "apologise first"), ("review", "redraft"), decision="rejected"),
            Phase(("expire",), ("review", "send_holding_reply"), decision="expired", writes=("tickets", "outbox"), past_deadline=True),
        ),
        effects={"tickets": 1, "outbox": 1},
        audit={"ticket_opened": 1, "reply_sent": 1, "decision_rejected": 1, "decision_expired": 1},
        outcome="holding",
        check=_ticket_status("open"),
    ),
    Scenario(
        name="revision",
        graph="revision",
        rules=(
            ("Draft:\n# Durable workflows\n\nFirst draft", '{"score": 0.5, "feedback": "Add an example."}'),
            ("Draft:\n# Durable workflows\n\nSecond draft", '{"score": 0.9, "feedback": "Good."}'),
            ("Write an improved version", "# Durable workflows\n\nSecond draft: a checkpoint after every step, for example."),
            ("Write the document", "# Durable workflows\n\nFirst draft."),
        ),
        model_nodes={"write": "Write the document", "review": "Score the draft"},
        phases=(
            Phase(("start", "revision", "Explain durable workflows", "--thread", "{tid}", "--out", "{out}"),
                  ("write", "review", "write", "review", "choose_draft")),
            Phase(("approve", "{tid}", "--expect", "{digest}"), ("publish", "publish_document"), decision="approved", writes=("documents",)),
        ),
        effects={"documents": 1},
        audit={"thread_started": 1, "document_published": 1, "decision_approved": 1},
        outcome="published",
        step_node=("review", "Draft:\n# Durable workflows\n\nFirst draft"),
        check=_published,
    ),
    Scenario(
        name="research",
        graph="research",
        rules=(
            ("Split the research topic", '{"subtasks": ["' + '", "'.join(SUBTASKS) + '"]}'),
            ("Summarise what the passages say", "Checkpoints save state after each step, so a crashed run resumes where it stopped."),
            ("Score the draft", '{"score": 0.9, "feedback": "Good."}'),
            ("You write short, clear markdown documents", REPORT),
        ),
        model_nodes={"plan": "Split the research topic", "research": SUBTASKS[1], "write": "You write short, clear markdown", "review": "Score the draft"},
        phases=(
            Phase(("start", "research", "durable agent workflows with approval gates", "--thread", "{tid}", "--out", "{out}"),
                  ("load_corpus", "plan", "research", "research", "research", "collect", "write", "review", "choose_draft"),
                  writes=("corpus_documents",)),
            Phase(("approve", "{tid}", "--expect", "{digest}"), ("publish", "publish_document"), decision="approved", writes=("documents",)),
        ),
        effects={"documents": 1},
        audit={"thread_started": 1, "document_published": 1, "decision_approved": 1},
        outcome="published",
        step_node=("research", "Summarise what the passages say"),  # three researchers in one step
        check=_researched_once,
    ),
]
def _load_demo_orders(pool: ConnectionPool) -> None:
    from nodes.orders import demo_orders, load_orders

    load_orders(pool, demo_orders())


REFUND_RULES = (("Classify the customer message", '{"intent": "billing"}'), ("Extract the refund request", '{"order_id": "1042", "amount": null}'))
REFUND_START = Phase(("start", "support", REFUND_MESSAGE, "--thread", "{tid}", "--email", OWNER),
                     ("classify", "extract_refund", "check_refund", "propose_refund"))
#: What both refund scenarios share: the request up to its gate, then one approval.
REFUND_SCENARIO = dict(
    graph="support", rules=REFUND_RULES, setup=_load_demo_orders, all_points=True,
    model_nodes={"classify": "Classify the customer message", "extract_refund": "Extract the refund request"},
)
SCENARIOS += [
    Scenario(
        name="support-refund",
        **REFUND_SCENARIO,
        phases=(
            REFUND_START,
            Phase(("approve", "{tid}", "--expect", "{digest}"), ("review", "place_credit_note", "issue_refund", "send_approved_reply"),
                  decision="approved", writes=("payment_operations", "outbox"), by="lead"),
        ),
        effects={"outbox": 1, "payment_operations": 2},
        audit={"decision_approved": 1, "saga_credit_note": 1, "saga_refund": 1, "reply_sent": 1, "saga_compensated_void": 0},
        outcome="refunded 149.00 USD on order 1042",
        step_node=("extract_refund", "Extract the refund request"),
        # the nasty one, in every run: the provider commits, then the answer never arrives
        provider_faults=(("credit_note", "timeout_after_commit"), ("refund", "timeout_after_commit")),
        pay_nodes=(("place_credit_note", "credit_note"), ("issue_refund", "refund")),
        provider_effects=(("credit_note", 1), ("credit_note:void", 0), ("refund", 1), ("void", 0)),
    ),
    Scenario(
        name="support-refund-refused",
        **REFUND_SCENARIO,
        phases=(
            REFUND_START,
            Phase(("approve", "{tid}", "--expect", "{digest}"), ("review", "place_credit_note", "issue_refund", "void_credit_note", "send_holding_reply"),
                  decision="approved", writes=("payment_operations", "tickets", "outbox"), by="lead"),
        ),
        effects={"outbox": 1, "payment_operations": 3, "tickets": 1},
        audit={"decision_approved": 1, "saga_credit_note": 1, "saga_refund_failed": 1, "saga_compensated_void": 1,
               "ticket_opened": 1, "reply_sent": 1, "saga_refund": 0},
        outcome="refund failed (HTTP 402: the card was closed), credit note voided",
        provider_faults=(("credit_note", "timeout_after_commit"), ("void", "timeout_after_commit")),
        provider_always=(("refund", "decline"),),
        pay_nodes=(("place_credit_note", "credit_note"), ("issue_refund", "refund"), ("void_credit_note", "void")),
        provider_effects=(("credit_note", 1), ("credit_note:void", 1), ("refund", 0), ("void", 1)),
        check=_ticket_status("open"),
    ),
]
BY_NAME = {s.name: s for s in SCENARIOS}

#: Nodes no scenario reaches, and why that is safe to leave out here.
NOT_ON_A_KILLED_PATH = {
    ("support", "explain_refund"): "writes nothing, a template like propose_refund; its replies are tested in test_refund_flow",
    ("support", "general_agent"): "the same factory (make_agent) as billing_agent and technical_agent",
    ("support", "lookup_kb"): "unreachable for new threads (classify searches); a thread saved before it with lookup_kb next resumes: test_support_graph",
    ("revision", "discard"): "writes nothing; ending unpublished is covered in test_deadlines",
    ("research", "discard"): "writes nothing; ending unpublished is covered in test_deadlines",
}


@dataclass(frozen=True)
class KillPoint:
    scenario: str
    phase: int
    kind: str
    target: str = ""

    @property
    def id(self) -> str:
        verb = BY_NAME[self.scenario].phases[self.phase].verb
        return "-".join(p for p in (self.scenario, verb, self.kind, self.target) if p)


def kill_points() -> list[KillPoint]:
    """Every node boundary, model call and write of every phase; the windows around a decision
    of each kind of deciding command; the window before the threads table is updated. A point
    an earlier scenario of the same graph covered is not repeated."""
    points: list[KillPoint] = []
    seen: set[tuple[str, ...]] = set()
    for scenario in SCENARIOS:
        last = len(scenario.phases) - 1
        for index, phase in enumerate(scenario.phases):
            def add(kind: str, target: str, *key: str) -> None:
                scope = scenario.name if scenario.all_points else scenario.graph
                if (scope, kind, *key) not in seen:
                    seen.add((scope, kind, *key))
                    points.append(KillPoint(scenario.name, index, kind, target))

            for node in dict.fromkeys(phase.nodes):
                add("after", node, node)
                if node in scenario.model_nodes:
                    add("model", node, node)
                if node in dict(scenario.pay_nodes):
                    add("pay", node, node)
                    add("paid", node, node)
                if node == scenario.step_node[0]:
                    add("step", node, node)
            for table in phase.writes:
                add("write", table, phase.verb, table)
            add("settle", "", "finished" if index == last else "waiting")
            if phase.decision:
                for kind in ("undecided", "unapplied", "unresumed"):
                    add(kind, "", "expire" if phase.verb == "expire" else "decide")
    return points


KILL_POINTS = kill_points()


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm():
    cli = WarmCli()
    yield cli
    cli.close()


@pytest.fixture
def server():
    with FaultServer() as server:
        yield server


@pytest.fixture
def provider():
    with PaymentProvider(hang=1.0) as provider:
        yield provider


@pytest.fixture
def env(env: dict[str, str], provider: PaymentProvider) -> dict[str, str]:
    return {**env, "SIGNOFF_MAX_ATTEMPTS": "2", "SIGNOFF_PAYMENTS_URL": provider.url, "SIGNOFF_PAYMENTS_TIMEOUT": "0.5"}


def has_start_command(graph: str) -> bool:
    return any(c.name == graph for c in start_app.registered_commands)


def counts(conn: psycopg.Connection, tid: str, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id = %s", (tid,)).fetchone()[0]


class Drive:
    """One scenario's thread, driven phase by phase in-process (CliRunner) unless killed."""

    def __init__(self, scenario: Scenario, cli, pool, database_url: str, server: FaultServer, out: Path, provider: PaymentProvider | None = None) -> None:
        self.s, self.cli, self.pool, self.url, self.server, self.out = scenario, cli, pool, database_url, server, out
        self.provider = provider
        self.tid = f"{scenario.graph}-t1"
        for needle, answer in scenario.rules:
            server.rule(needle, ok(answer))
        for op, kind in scenario.provider_faults:
            assert provider is not None, f"{scenario.name} needs the payment provider fixture"
            provider.fault(op, kind)
        for op, kind in scenario.provider_always:
            assert provider is not None
            provider.always(op, kind)
        if scenario.setup is not None:
            scenario.setup(pool)
        #: reviewer tokens of the phases decided by someone other than USER (SIGNOFF_TOKEN)
        self.tokens = {p.by: tokens.create(pool, p.by) for p in scenario.phases if p.by != USER}

    def env_of(self, phase: Phase) -> dict[str, str]:
        """What the phase's command runs with besides the test's env: its reviewer's token."""
        return {"SIGNOFF_TOKEN": self.tokens[phase.by]} if phase.by in self.tokens else {}

    def prepare(self, phase: Phase) -> None:
        if phase.past_deadline:
            with self.pool.connection() as conn:
                conn.execute("UPDATE threads SET deadline = now() - interval '1 hour' WHERE thread_id = %s", (self.tid,))

    def run(self, phase: Phase) -> list[str]:
        self.prepare(phase)
        result = self.cli(*phase.argv(self.tid, self.out, self.url), **self.env_of(phase))
        assert result.exit_code == 0, result.output
        return [m[1] for m in map(NODE_LINE.match, result.output.splitlines()) if m]

    def approvals(self) -> int:
        return count_rows(self.pool, "approvals", thread_id=self.tid)

    def runner(self) -> ThreadRunner:
        return ThreadRunner(self.pool, get_spec(self.s.graph))

    def assert_finished_once(self) -> None:
        row = threads.get(self.pool, self.tid)
        snapshot = self.runner().snapshot(self.tid)
        values = dict(snapshot.values)
        assert row is not None and row.status == "finished", (row, snapshot.next)
        assert snapshot.next == ()
        assert self.s.outcome in self.runner().spec.outcome(values)
        expected = [(p.decision, p.actor) for p in self.s.phases if p.decision]
        with psycopg.connect(self.url) as conn:
            for table, n in self.s.effects.items():
                assert counts(conn, self.tid, table) == n, f"{table}: {counts(conn, self.tid, table)} rows, expected {n}"
            approvals = conn.execute("SELECT decision, actor FROM approvals WHERE thread_id = %s ORDER BY id", (self.tid,)).fetchall()
            assert approvals == expected, "one decision per gate visit, none lost"
            assert [(d["verdict"], d["actor"]) for d in values.get("decisions", [])] == expected, "every decision reached the thread"
            audited = dict(conn.execute("SELECT kind, count(*) FROM audit_events WHERE thread_id = %s GROUP BY kind", (self.tid,)).fetchall())
            for kind, n in self.s.audit.items():
                assert audited.get(kind, 0) == n, f"audit {kind}: {audited.get(kind, 0)}, expected {n} ({audited})"
            self.s.check({**values, "_tid": self.tid}, conn, self.out)
        for what, n in self.s.provider_effects:
            assert self.provider is not None
            op, _, status = what.partition(":")
            assert self.provider.count(op, status or None) == n, f"provider {what}: {self.provider.count(op, status or None)}, expected {n}"


@pytest.fixture
def drive(cli, pool, database_url, server, tmp_path, provider):
    def make(name: str) -> Drive:
        scenario = BY_NAME[name]
        assert has_start_command(scenario.graph), f"`signoff start {scenario.graph}` is not a command"
        return Drive(scenario, cli, pool, database_url, server, tmp_path / "out", provider)

    return make


# --- the graph and its scenarios agree -------------------------------------------------------


def test_every_registered_graph_has_a_scenario_covering_its_nodes():
    for name, spec in GRAPHS.items():
        covered = {n for s in SCENARIOS if s.graph == name for p in s.phases for n in p.nodes}
        nodes = set(spec.build().nodes)
        missing = nodes - covered - {node for graph, node in NOT_ON_A_KILLED_PATH if graph == name}
        assert covered, f"graph {name!r} has no kill scenario: add one to SCENARIOS"
        assert not missing, f"graph {name!r}: no kill point after {sorted(missing)}: extend its scenario"
        assert covered <= nodes, f"graph {name!r} has no node(s) {sorted(covered - nodes)}"


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_prints_the_nodes_its_kill_points_expect(drive, name):
    run = drive(name)
    for phase in run.s.phases:
        assert run.run(phase) == list(phase.nodes), phase.args
    run.assert_finished_once()


# --- the kill test ---------------------------------------------------------------------------


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.id for p in KILL_POINTS])
def test_kill_at_every_point_then_recover_finishes_with_one_of_each_side_effect(point: KillPoint, drive, warm, env, pool, database_url, server):
    run = drive(point.scenario)
    for phase in run.s.phases[: point.phase]:
        run.run(phase)

    phase = run.s.phases[point.phase]
    run.prepare(phase)
    decided_before = run.approvals()
    release = threading.Event()
    block = StatementBlock(database_url)
    try:
        if point.kind in ("pay", "paid"):
            op = dict(run.s.pay_nodes)[point.target]
            held_before = run.provider.held(op)
            run.provider.first(op, "hold" if point.kind == "pay" else "hold_after_commit")
        elif point.kind in ("model", "step"):
            needle = run.s.model_nodes[point.target]
            seen = server.matching(needle)
            server.once(needle, held(release))
        elif point.kind == "write":
            block.arm(point.target, "INSERT")
        elif point.kind == "settle":
            block.arm("threads", "UPDATE", "OLD.status = 'running' AND NEW.status IN ('waiting', 'finished')")
        elif point.kind == "undecided":
            block.arm("approvals", "INSERT")
        elif point.kind == "unapplied":
            block.arm("checkpoints", "INSERT")
        elif point.kind == "unresumed":
            block.arm("threads", "UPDATE", "OLD.status = 'waiting' AND NEW.status = 'running'")

        # libpq names the victim's sessions, so the test can wait until the last statement it
        # had sent has finished or died (a person never resumes within those milliseconds).
        proc = warm.run(phase.argv(run.tid, run.out, run.url), {**env, **run.env_of(phase), "PGAPPNAME": VICTIM})
        blocked = None
        if point.kind == "after":
            proc.wait_for(rf"^✓ {point.target}\s")
        elif point.kind in ("pay", "paid"):
            wait_until(lambda: run.provider.held(op) > held_before, what=f"the {op} payment request")
        elif point.kind == "model":
            wait_until(lambda: server.matching(needle) > seen, what=f"the {point.target} model request")
        elif point.kind == "step":
            wait_until(lambda: server.matching(needle) > seen, what=f"the {point.target} model request")
            block.arm("checkpoints", "INSERT")  # nothing checkpoints while the step's node waits
            release.set()
            blocked = block.wait_blocked()
        else:
            blocked = block.wait_blocked()
        code = proc.kill()
        if point.kind == "after":
            assert code in (-signal.SIGKILL, 0), proc.output  # 0: it finished the phase before the kill landed
        else:
            assert code == -signal.SIGKILL, proc.output
        if blocked is not None and point.kind != "write":
            block.terminate(blocked["pid"])  # the statement never lands
        block.release()  # a held write lands now, as one the dying process had already sent
    finally:
        release.set()
        run.provider.release.set()
        block.close()
    wait_until(lambda: not sessions_named(database_url, VICTIM), what="the dead process's sessions to end")
    assert not threads.is_claimed(pool, run.tid), "a dead process's claim dies with its session"

    if point.kind == "step":
        # The step's checkpoint is not saved; the writes of its finished tasks may be (they are
        # saved as each task ends, alongside the step's checkpoint, so the last may be lost).
        step_tasks = [t for t in run.runner().snapshot(run.tid).tasks if t.name == point.target]
        assert step_tasks, "the step was not checkpointed"
        unsaved = sum(1 for t in step_tasks if t.result is None)
    recover(run, phase, point, decided_before)
    if point.kind == "step":
        asked = server.matching(run.s.step_node[1])
        assert asked == len(step_tasks) + unsaved, f"{asked} calls: a task whose writes were saved ran again"
    for later in run.s.phases[point.phase + 1:]:
        run.run(later)
    run.assert_finished_once()


def recover(run: Drive, phase: Phase, point: KillPoint, decided_before: int) -> None:
    """Do what a person should after the kill, and check the alternative is refused."""
    row = threads.get(run.pool, run.tid)
    assert row is not None
    recorded = run.approvals() > decided_before
    decision_in_thread = bool(run.runner().snapshot(run.tid).values.get("decision"))
    expected_state = {
        "model": row.status == "running",
        "step": row.status == "running",
        "write": row.status == "running",
        "settle": row.status == "running",
        "undecided": not recorded and row.status == "waiting",
        "unapplied": recorded and not decision_in_thread and row.status == "waiting",
        "unresumed": recorded and decision_in_thread and row.status == "waiting",
    }
    assert expected_state.get(point.kind, True), (point, row.status, recorded, decision_in_thread)

    if phase.decision and not recorded:
        # The decision never reached the database: nothing to resume; decide again.
        refused = run.cli("resume", run.tid)
        assert refused.exit_code != 0 and "waiting at gate" in refused.output, refused.output
        run.run(phase)
    elif phase.decision and row.status == "waiting":
        # Recorded, but the process died before running on it: deciding again is refused,
        # and `recover` finds the thread and applies the recorded decision.
        if phase.verb in ("approve", "reject"):
            again = run.cli(*phase.argv(run.tid, run.out, run.url), **run.env_of(phase))
            assert again.exit_code != 0 and re.search(r"already decided by \S+ at \d{4}-", again.output), again.output
        result = run.cli("recover")
        assert result.exit_code == 0 and f"recovering {run.tid}" in result.output, result.output
    elif row.status == "waiting":
        # Not a decision phase and already at its gate: the run got there before the kill.
        assert point.kind in ("after", "settle") or phase.decision is None
        refused = run.cli("resume", run.tid)
        assert refused.exit_code != 0 and "waiting at gate" in refused.output, refused.output
    else:
        command = ("recover",) if point.kind == "model" else ("resume", run.tid)
        result = run.cli(*command)
        assert result.exit_code == 0, result.output
    row = threads.get(run.pool, run.tid)
    assert row is not None and row.status in ("waiting", "finished"), row


# --- recover tells a dead run from a live one ------------------------------------------------


def test_recover_resumes_a_killed_thread_and_skips_one_still_running(env, server, pool, cli):
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    cli("kb", "load")
    dead_release, live_release = threading.Event(), threading.Event()
    server.once("dead one", held(dead_release))  # the classify call: the first to name the message
    server.once("live one", held(live_release))

    dead = spawn_cli(["start", "support", "dead one", "--thread", "dead"], env)
    live = spawn_cli(["start", "support", "live one", "--thread", "live"], env)
    try:
        wait_until(lambda: server.matching("dead one") and server.matching("live one"), what="both classify requests")
        assert dead.kill() == -signal.SIGKILL
        dead_release.set()
        wait_until(lambda: not threads.is_claimed(pool, "dead"), what="the dead run's claim to go")
        assert threads.is_claimed(pool, "live"), "the live run holds its claim"

        result = cli("recover")
        assert result.exit_code == 0, result.output
        assert "recovering dead" in result.output
        assert "recovering live" not in result.output, "a thread running elsewhere is not touched"
        assert threads.get(pool, "dead").status == "waiting"
        assert threads.get(pool, "live").status == "running"

        live_release.set()
        assert live.wait() == 0, live.output
        assert "waiting at gate review" in live.output
    finally:
        live_release.set()
        live.kill()
    classified = [b for b in server.requests if "Classify the customer message" in prompt_text(b) and "live one" in prompt_text(b)]
    assert len(classified) == 1, "the live thread's classify ran once, in its own process"
    assert count_rows(pool, "tickets", thread_id="live") == 1 and count_rows(pool, "tickets", thread_id="dead") == 1
    assert "no abandoned threads" in cli("recover").output


def test_recover_with_nothing_abandoned_says_so(cli):
    result = cli("recover")
    assert result.exit_code == 0 and "no abandoned threads" in result.output


# --- Ctrl-C / SIGTERM --------------------------------------------------------------------------


@pytest.fixture
def interruptible(env, server, pool, cli):
    """A support thread whose classify call the test holds, so a signal lands mid-node."""
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    cli("kb", "load")
    release = threading.Event()
    server.once("Classify the customer message", held(release))
    proc = spawn_cli(["start", "support", "The sync engine corrupts my notes", "--thread", "intr"], env)
    wait_until(lambda: server.matching("Classify the customer message"), what="the classify request")
    yield proc, release
    release.set()
    proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_interrupt_stops_at_the_next_step_boundary_and_resume_finishes(interruptible, sig, pool, cli, server, database_url):
    proc, release = interruptible
    proc.send(sig)
    proc.wait_for("stopping at the next step boundary", stream="err")
    release.set()  # classify completes; the drain stops the run before technical_agent
    assert proc.wait() == 130, proc.output
    assert "✓ classify" in proc.output and "technical_agent" not in proc.output
    assert "signoff resume intr" in proc.output
    assert threads.get(pool, "intr").status == "interrupted"
    assert server.matching("Classify the customer message") == 1

    result = cli("resume", "intr")
    assert result.exit_code == 0, result.output
    assert "classify" not in result.output, "the step saved before the interrupt is not run again"
    assert "waiting at gate review" in result.output
    assert cli("approve", "intr", *expect(database_url, "intr")).exit_code == 0
    assert threads.get(pool, "intr").status == "finished"
    assert count_rows(pool, "tickets", thread_id="intr") == 1 and count_rows(pool, "outbox", thread_id="intr") == 1


def test_a_second_interrupt_exits_at_once_and_the_thread_stays_resumable(interruptible, pool, cli, server, database_url):
    proc, release = interruptible
    proc.send(signal.SIGINT)
    proc.wait_for("stopping at the next step boundary", stream="err")
    proc.send(signal.SIGINT)
    assert proc.wait(timeout=10) == 130, proc.output  # the held model call never answered
    assert "✓" not in proc.output
    release.set()
    wait_until(lambda: not threads.is_claimed(pool, "intr"), what="the claim to go")

    result = cli("resume", "intr")
    assert result.exit_code == 0, result.output
    assert "✓ classify" in result.output and "waiting at gate review" in result.output
    assert cli("approve", "intr", *expect(database_url, "intr")).exit_code == 0
    assert count_rows(pool, "tickets", thread_id="intr") == 1 and count_rows(pool, "outbox", thread_id="intr") == 1
