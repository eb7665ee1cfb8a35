"""The `signoff` command, thin: the typer declarations (options, help text), the checks of the
command line that give the one-line usage errors, and calls into graphs/ and checkpoint/,
where what a command does and how it is shown live (runtime/running.py, deciding.py, sweeps.py,
the *_display modules; console/terminal.py for output and errors).

Imports nothing heavy at start-up: each command imports what it needs when it runs."""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

import typer

from checkpoint.errors import InvalidInput
from checkpoint.settings import MAX_DEADLINE_HOURS, MAX_INPUT_BYTES, Settings, bounded_number
from console.display import safe_line
from runtime.session import existing_thread, open_db, settings
from console.terminal import OneLineUsageErrors, PipeSafeStdout, err, friendly, out


class AnyGraphStart(typer.core.TyperGroup):
    """`signoff start GRAPH`: a built-in graph's own command (it takes its text), else the
    command that starts any graph of the project with --input JSON."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name.startswith("-"):
            return found
        ctx.meta["signoff.graph"] = cmd_name
        return super().get_command(ctx, "graph")


app = typer.Typer(help="Durable agent workflows with human sign-off gates.", no_args_is_help=True, add_completion=False, cls=OneLineUsageErrors)
start_app = typer.Typer(help="Start a thread and stream it to its first stop: `start GRAPH --input JSON` for any graph of "
                        "your project (see `signoff graphs`).", no_args_is_help=True, cls=AnyGraphStart)
db_app = typer.Typer(help="The database: migrations and status.", no_args_is_help=True)
kb_app = typer.Typer(help="The support knowledge base.", no_args_is_help=True)
app.add_typer(start_app, name="start")
app.add_typer(db_app, name="db")
model_app = typer.Typer(help="The local model servers (llama.cpp, Qwen2.5-Coder 0.5B Instruct; local:1.5b opt-in).", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(model_app, name="model")

#: Whole-string match (fullmatch): `$` would also accept a trailing newline.
THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UsageError = InvalidInput  # bad input from the command line: exit 2


# --- validation ------------------------------------------------------------------------------


def valid_text(text: str, what: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"the {what} is not valid UTF-8: pass plain text") from None
    if not text.strip():
        raise UsageError(f"the {what} is empty: pass some text in quotes")
    if size > MAX_INPUT_BYTES:
        raise UsageError(f"the {what} is {size} bytes, over the {MAX_INPUT_BYTES}-byte limit: shorten it")
    if "\x00" in text:
        raise UsageError(f"the {what} contains a NUL character: remove it")
    return text.strip()


def valid_thread_id(thread_id: str) -> str:
    if not THREAD_ID.fullmatch(thread_id):
        raise UsageError(f"{thread_id!r} is not a thread id: use 1-64 letters, digits, '.', '_' or '-'")
    return thread_id


def refuse_by(by: str | None) -> None:
    """`--by` once named who decides; it is refused with the one line saying who acts now
    (the SIGNOFF_TOKEN owner, else the OS login: checkpoint/identity.py)."""
    if by is not None:
        from checkpoint.identity import retired_by_option

        raise retired_by_option()


def interactive() -> bool:
    """A person at a terminal: both stdin (to answer) and stdout (to read) are terminals."""
    try:
        return sys.stdin.isatty() and out.is_terminal
    except (ValueError, AttributeError):
        return False


# --- starting a thread ---------------------------------------------------------------------


def deadline_hours(graph: str, deadline: Optional[float], config: Settings) -> float:
    """--deadline, else SIGNOFF_<GRAPH>_DEADLINE_HOURS, else SIGNOFF_GATE_DEADLINE_HOURS; a
    finite number of hours in (0, MAX_DEADLINE_HOURS], checked before anything is written."""
    from checkpoint.settings import SettingsError

    if deadline is not None:
        try:
            return bounded_number(deadline, "--deadline", upper=MAX_DEADLINE_HOURS)
        except SettingsError:
            raise UsageError(f"--deadline must be a positive number of hours up to {MAX_DEADLINE_HOURS}, not {deadline!r}") from None
    name = f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS"
    per_graph = (os.environ.get(name) or "").strip()
    return bounded_number(per_graph, name, upper=MAX_DEADLINE_HOURS) if per_graph else config.gate_deadline_hours


def start_thread(graph: str, text: str, thread: Optional[str], options: dict[str, Any], deadline: Optional[float] = None, *, detach: bool = False) -> None:
    """Check the text, the thread id and the deadline before anything is written, then run the
    thread here or hand it to a worker (runtime/running.py)."""
    from runtime.running import start_thread as run_new_thread

    text = valid_text(text, "message" if graph == "support" else "text")
    thread_id = valid_thread_id(thread) if thread else f"{graph}-{uuid.uuid4().hex[:8]}"
    config = settings()
    run_new_thread(config, graph, text, thread_id, {**options, "deadline_hours": deadline_hours(graph, deadline, config)}, detach=detach)


# --- commands ------------------------------------------------------------------------------


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(None, "--config", envvar="SIGNOFF_CONFIG", help="Your LangGraph project's langgraph.json (default: ./langgraph.json)."),
) -> None:
    """Durable agent workflows with human sign-off gates."""
    if config is not None:
        os.environ["SIGNOFF_CONFIG"] = str(config)  # for this process and the workers it is


@start_app.command("graph", hidden=True)
@friendly
def start_any_graph(
    ctx: typer.Context,
    graph_input: str = typer.Option(..., "--input", help="The graph's input, a JSON object (checked against its input schema)."),
    context: Optional[str] = typer.Option(None, "--context", help="The run's Runtime.context, a JSON object (the graph's context_schema)."),
    interrupt_before: list[str] = typer.Option([], "--interrupt-before", help="Pause before this node too (repeatable; * for every node)."),
    interrupt_after: list[str] = typer.Option([], "--interrupt-after", help="Pause after this node too (repeatable)."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours a gate waits before its default action."),
    detach: bool = typer.Option(False, "--detach", help="Queue the thread for a worker and return at once (prints its id)."),
) -> None:
    """Start a thread of any graph of your project (langgraph.json).

    Example: signoff start purchase --input '{"item": "laptop", "quantity": 2}'
    """
    from runtime.starting import start_any

    graph = ctx.meta.get("signoff.graph")
    if not graph:
        raise UsageError("name the graph: signoff start GRAPH --input JSON (see `signoff graphs`)")
    if not PROJECT_GRAPH_NAME.fullmatch(graph):
        raise UsageError(f"{graph!r} is not a graph name: see `signoff graphs`")
    thread_id = valid_thread_id(thread) if thread else f"{graph}-{uuid.uuid4().hex[:8]}"
    config = settings()
    start_any(config, graph, graph_input, context, list(interrupt_before), list(interrupt_after), thread_id,
              deadline_hours(graph.replace("-", "_"), deadline, config), detach=detach, deadline_given=deadline is not None)


graphs_app = typer.Typer(help="The graphs Signoff can run: its own and your project's (langgraph.json).", invoke_without_command=True)
app.add_typer(graphs_app, name="graphs")


@graphs_app.callback()
@friendly
def list_graphs(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Every graph: name, source, static gates, input keys, version, and why it cannot load."""
    if ctx.invoked_subcommand is not None:
        return
    from console.project_display import print_graphs
    from runtime.checking import graph_rows
    from runtime.project import current_project

    print_graphs(graph_rows(), current_project(), as_json=as_json)


@graphs_app.command("check")
@friendly
def check_graphs(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Unfinished threads the graphs here cannot resume (a node, gate or channel they need is
    gone); exits 1 if there is any. Run it before a deploy."""
    from checkpoint.errors import EXIT_FAILED
    from console.project_display import print_check
    from runtime.checking import cannot_resume

    with open_db(settings()) as pool:
        rows, checked = cannot_resume(pool)
    print_check(rows, checked, as_json=as_json)
    if rows:
        raise typer.Exit(EXIT_FAILED)


@start_app.command("support")
@friendly
def start_support(
    message: str = typer.Argument(..., help="The customer's message."),
    email: Optional[str] = typer.Option(None, "--email", help="Where the reply would be sent."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the review gate waits before its default action (holding reply)."),
    detach: bool = typer.Option(False, "--detach", help="Queue the thread for a worker and return at once (prints its id)."),
) -> None:
    """Support escalation: classify, answer from the knowledge base or escalate, human review.

    Example: signoff start support "I was charged twice this month" --email maya@example.com
    """
    email = valid_text(email, "email") if email is not None else None
    start_thread("support", message, thread, {"email": email}, deadline, detach=detach)


def out_dir_option(out_dir: Optional[Path]) -> str:
    """--out resolved now (default SIGNOFF_HOME/published), so the thread publishes there even
    when it is approved from another shell."""
    from nodes.publishing import resolve_out_dir

    try:
        return resolve_out_dir(out_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # an odd path: too long, a loop of links, not permitted to look
        raise UsageError(f"--out {out_dir}: {exc.strerror or exc.__class__.__name__}: pass another folder") from None


@start_app.command("revision")
@friendly
def start_revision(
    brief: str = typer.Argument(..., help="What to write."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the published markdown (default: SIGNOFF_HOME/published)."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the publish gate waits before its default action (not published)."),
    detach: bool = typer.Option(False, "--detach", help="Queue the thread for a worker and return at once (prints its id)."),
) -> None:
    """Revision loop: write, review and revise until good enough (bounded), then sign-off to publish.

    Example: signoff start revision "Explain why retries need idempotency keys" --out ./published
    """
    start_thread("revision", brief, thread, {"out_dir": out_dir_option(out_dir)}, deadline, detach=detach)


@start_app.command("research")
@friendly
def start_research(
    topic: str = typer.Argument(..., help="What to research in the corpus."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the published report (default: SIGNOFF_HOME/published)."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the publish gate waits before its default action (not published)."),
    detach: bool = typer.Option(False, "--detach", help="Queue the thread for a worker and return at once (prints its id)."),
) -> None:
    """Research pipeline: plan, research the corpus in parallel, write and review, sign-off to publish.

    Example: signoff start research "How do approval gates and deadlines work together?"
    """
    start_thread("research", topic, thread, {"out_dir": out_dir_option(out_dir)}, deadline, detach=detach)


#: A graph name as `--graph` takes it (checked against the registry only when it names no thread).
GRAPH_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: A graph name a project's langgraph.json may give (`start GRAPH`).
PROJECT_GRAPH_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


@app.command()
@friendly
def pending(
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N threads, oldest first (default 100)."),
    graph: Optional[str] = typer.Option(None, "--graph", help="Only threads of this graph (support, revision, research)."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Only threads waiting longer than this: 30m, 2h, 3d, 1w."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """Threads waiting at a gate, oldest first. Reads only: overdue gates are marked, and
    their default action is applied by `signoff expire` (or a worker), never by a listing.

    One indexed query on the threads table (what the run stored when it stopped at the gate),
    so it answers at once with any number of threads waiting."""
    from checkpoint import listing

    page_size = listing.valid_limit(limit) if limit is not None else listing.DEFAULT_LIMIT
    wait = listing.parse_duration(older_than, "--older-than") if older_than is not None else None
    if graph is not None and not GRAPH_NAME.fullmatch(graph):
        raise UsageError(f"--graph {graph!r} is not a graph name: use support, revision or research")
    from console.pending_display import print_pending, waiting_threads

    with open_db(settings(), checkpoints=False) as pool:
        if graph is not None:
            known_graph(pool, graph)
        found = waiting_threads(pool, limit=page_size, graph=graph, older_than=wait)
        print_pending(found, limit=page_size, filtered=bool(graph or wait), as_json=as_json)
        if not as_json:
            from runtime.blocked import print_blocked

            print_blocked(pool, lambda line: out.print(safe_line(line), soft_wrap=True))


def known_graph(pool: Any, graph: str) -> None:
    """Refuse a --graph this version does not ship; the registry (a heavy import) is asked only
    when no thread in the database runs that graph."""
    from checkpoint.listing import graph_seen

    if graph_seen(pool, graph):
        return
    from runtime.registry import all_names

    if graph not in all_names():
        raise UsageError(f"there is no graph {graph!r}: use one of {', '.join(all_names())}")


@app.command()
@friendly
def show(
    thread_id: str = typer.Argument(..., help="The thread to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """A thread's state, the content awaiting sign-off, and its steps so far.

    Reads the threads row (where the thread stands, and what waits for sign-off with its
    digest, stored when it reached the gate) and the latest checkpoint's values through the
    checkpointer, without compiling a graph, so it answers at once."""
    from console.thread_display import print_thread, read_thread

    from runtime.show import project_thread

    valid_thread_id(thread_id)
    with open_db(settings()) as pool:
        project_view = project_thread(pool, thread_id)
        if project_view is not None:  # any LangGraph graph: its state, questions and digest
            from checkpoint.notifications import failed_for
            from console.project_display import print_project_thread

            print_project_thread(project_view, as_json=as_json, failed_notifications=[] if as_json else failed_for(pool, thread_id))
            return
        view = read_thread(pool, thread_id, notifications=not as_json)
    print_thread(thread_id, view, as_json=as_json)


@app.command()
@friendly
def approve(
    thread_id: str = typer.Argument(..., help="The thread waiting at a gate."),
    note: str = typer.Option("", "--note", help="A note for the audit trail."),
    by: Optional[str] = typer.Option(None, "--by", hidden=True, help="No longer accepted: you act as your OS login, or as the owner of the token in SIGNOFF_TOKEN."),
    expect: Optional[str] = typer.Option(None, "--expect", help="The digest of the content you reviewed (see `show`); required without a terminal."),
    yes: bool = typer.Option(False, "--yes", "-y", help="At a terminal: show the content and approve it without asking."),
    detach: bool = typer.Option(False, "--detach", help="Record the decision, let a worker run the thread on, return at once."),
    edit: bool = typer.Option(False, "--edit", help="Edit the reply and amount (or, for an interrupt, the action's arguments) in $EDITOR first, then approve the edited content (a raised amount is only proposed)."),
    interrupt: Optional[str] = typer.Option(None, "--interrupt", help="Which interrupt, when the thread waits on several (ids in `show`)."),
    args: Optional[str] = typer.Option(None, "--args", help="Approve the action with these arguments instead (a JSON object), if its request allows edits."),
) -> None:
    """Approve what a thread waits on, then resume it to its next stop. You approve as the owner
    of the reviewer token in SIGNOFF_TOKEN, else as your OS login.

    Example: signoff approve support-1a2b3c4d --expect 3f9c2a71d0e4 (the digest `show` printed)
    """
    refuse_by(by)
    if note:
        valid_text(note, "note")
    question = {"interrupt_id": interrupt, "edit_args": args}
    if edit:
        from runtime.deciding import edit_and_approve

        edit_and_approve(valid_thread_id(thread_id), note, expect, detach=detach, **question)
        return
    decide(thread_id, "approved", note, expect, yes=yes, detach=detach, **question)


def decide(thread_id: str, verdict: str, note: str, expect: Optional[str], *, yes: bool = False, detach: bool = False,
           handover: bool = False, **question: Any) -> None:
    """Check that an approval binds to content the person saw: the digest given with --expect,
    or the content shown at a terminal (runtime/deciding.py). Without a terminal and without
    --expect nothing was shown, so it is refused. Who decides is worked out there."""
    from runtime.deciding import decide_and_resume

    if verdict in ("approved", "answered") and expect is None and not interactive():
        raise UsageError(f"{'approve' if verdict == 'approved' else 'answer'} needs --expect DIGEST when not run at a terminal, so it approves exactly what you "
                         f"reviewed: see the digest with `signoff show {thread_id}`")
    decide_and_resume(valid_thread_id(thread_id), verdict, note, expect, yes=yes, detach=detach, handover=handover,
                      **{k: v for k, v in question.items() if k == "value" or (v is not None and v is not False)})


@app.command()
@friendly
def reject(
    thread_id: str = typer.Argument(..., help="The thread waiting at a gate."),
    feedback: Optional[str] = typer.Option(None, "--feedback", help="What to change; it reaches the model that redrafts."),
    hand_over: bool = typer.Option(False, "--hand-over", help="Support: give the thread to a specialist instead (the customer "
                                   "gets the holding reply, a ticket is opened, no redraft); --feedback is then the why, optional."),
    by: Optional[str] = typer.Option(None, "--by", hidden=True, help="No longer accepted: you act as your OS login, or as the owner of the token in SIGNOFF_TOKEN."),
    expect: Optional[str] = typer.Option(None, "--expect", help="Refuse if the content's digest is not this (see `show`)."),
    detach: bool = typer.Option(False, "--detach", help="Record the decision, let a worker run the thread on, return at once."),
    ignore: bool = typer.Option(False, "--ignore", help="Agent Inbox requests: answer ignore (skip the action), if the request allows it."),
    interrupt: Optional[str] = typer.Option(None, "--interrupt", help="Which interrupt, when the thread waits on several (ids in `show`)."),
) -> None:
    """Reject with feedback, then resume the thread (redraft, or its bounded default); or hand it to a specialist.

    Example: signoff reject support-1a2b3c4d --feedback "Link the export article"
    """
    refuse_by(by)
    if feedback is None and not hand_over and not ignore:
        raise UsageError("reject needs --feedback TEXT (what to change: the model redrafts) or, for support, "
                         "--hand-over (a specialist takes the thread), or --ignore for an Agent Inbox request")
    note = valid_text(feedback, "feedback") if feedback is not None else ""
    decide(thread_id, "rejected", note, expect, detach=detach, handover=hand_over, ignore=ignore, interrupt_id=interrupt)


@app.command()
@friendly
def answer(
    thread_id: str = typer.Argument(..., help="The thread whose interrupt() asks for a value."),
    value: str = typer.Option(..., "--value", help="The answer, as JSON: the graph's interrupt() returns it."),
    expect: Optional[str] = typer.Option(None, "--expect", help="The digest of what you saw (see `show`); required without a terminal."),
    interrupt: Optional[str] = typer.Option(None, "--interrupt", help="Which interrupt, when the thread waits on several (ids in `show`)."),
    note: str = typer.Option("", "--note", help="A note for the audit trail."),
    by: Optional[str] = typer.Option(None, "--by", hidden=True, help="No longer accepted: you act as your OS login, or as the owner of the token in SIGNOFF_TOKEN."),
    detach: bool = typer.Option(False, "--detach", help="Record the answer, let a worker run the thread on, return at once."),
) -> None:
    """Answer an interrupt() that asks for a value (not an approval), then resume the thread.

    Example: signoff answer purchase-1a2b3c4d --value 50000 --expect 3f9c2a71d0e4
    """
    import json

    refuse_by(by)
    if note:
        valid_text(note, "note")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--value is not JSON ({exc.msg} at column {exc.colno}): quote text as '\"text\"'") from None
    decide(thread_id, "answered", note, expect, yes=True, detach=detach, value=parsed, interrupt_id=interrupt)


@app.command()
@friendly
def resume(thread_id: str = typer.Argument(..., help="A thread whose run died, was interrupted, or failed.")) -> None:
    """Continue a thread from its last saved step (after a crash, Ctrl-C or a database outage)."""
    from runtime.running import resume_here

    valid_thread_id(thread_id)
    with existing_thread(thread_id) as runner:
        resume_here(runner, thread_id)


@app.command()
@friendly
def recover() -> None:
    """Resume every thread whose process died mid-run (never one still running elsewhere).

    Each thread is recovered on its own: one that fails is reported and the rest go on; the
    exit code is 0 only if every thread was recovered."""
    from runtime.sweeps import recover_abandoned

    recover_abandoned(settings())


@app.command()
@friendly
def expire() -> None:
    """Apply the default action of every gate whose deadline has passed (audited as expired)."""
    from runtime.sweeps import expire_overdue

    expire_overdue(settings())


@app.command()
@friendly
def audit(
    thread_id: str = typer.Argument(..., help="The thread to audit."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """Every decision, expiry, retry, fallback and side effect of a thread, with time and actor."""
    from checkpoint import threads
    from checkpoint.audit import events_of
    from console.thread_display import print_audit

    valid_thread_id(thread_id)
    with open_db(settings(), checkpoints=False) as pool:
        threads.get_existing(pool, thread_id)
        events = events_of(pool, thread_id)
    print_audit(thread_id, events, as_json=as_json)


@app.command("config")
@friendly
def show_config(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md).")) -> None:
    """The configuration in force (secrets hidden)."""
    from console.admin_display import print_config
    from runtime.session import described

    print_config(described(settings()), as_json=as_json)


@db_app.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply pending migrations (LangGraph's checkpoint tables, then Signoff's)."""
    from checkpoint.database import connect
    from checkpoint.migrations import migrate

    with connect(settings(), migrate=False) as pool:
        applied = migrate(pool)
    out.print("applied: " + ", ".join(f"{m.version:03d}_{m.name}" for m in applied) if applied else "up to date")


@db_app.command("status")
@friendly
def db_status(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md).")) -> None:
    """Applied and pending migrations."""
    from checkpoint.database import connect
    from checkpoint.migrations import status
    from console.admin_display import print_migrations

    with connect(settings(), migrate=False) as pool:
        rows = status(pool)
    print_migrations(rows, as_json=as_json)


@db_app.command("prune")
@friendly
def db_prune(
    finished_older_than: float = typer.Option(0.0, "--finished-older-than", metavar="DAYS", help="Only threads finished at least this many days ago (default 0: every finished thread)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be freed; delete nothing."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """Delete the checkpoints of finished threads except the last one per thread, and their
    closed jobs and progress events (but the last stop).

    Keeps the threads, decisions, audit and side-effect rows; never touches a thread that is
    running, queued, failed or waiting, so it is safe to run while threads run.

    Example: signoff db prune --finished-older-than 30 --dry-run"""
    from datetime import timedelta

    from checkpoint.listing import MAX_DURATION
    from checkpoint.retention import prune_finished
    from console.admin_display import print_prune

    days = MAX_DURATION.days
    if not (finished_older_than == finished_older_than and 0 <= finished_older_than <= days):  # NaN fails the first test
        raise UsageError(f"--finished-older-than must be a number of days from 0 to {days}, not {finished_older_than!r}")
    with open_db(settings()) as pool:
        report = prune_finished(pool, older_than=timedelta(days=finished_older_than), dry_run=dry_run)
    print_prune(report, finished_older_than, dry_run=dry_run, as_json=as_json)


@kb_app.command("load")
@friendly
def kb_load(paths: Optional[list[Path]] = typer.Argument(None, help="Markdown files or folders (default: the shipped articles).")) -> None:
    """Load knowledge-base articles; unchanged ones are left alone."""
    from nodes.knowledge import collect, load_articles, shipped_articles_dir

    articles = collect(list(paths) if paths else [shipped_articles_dir()])  # validated before any write
    with open_db(settings()) as pool:
        written, unchanged = load_articles(pool, articles)
    out.print(f"{written} loaded, {unchanged} unchanged")


@kb_app.command("search")
@friendly
def kb_search_cmd(
    query: str = typer.Argument(..., help="What to look for."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """Full-text search over the knowledge base."""
    from console.admin_display import print_kb_hits
    from nodes.knowledge import ensure_loaded
    from nodes.tools import kb_search

    query = valid_text(query, "query")
    with open_db(settings(), checkpoints=False) as pool:
        ensure_loaded(pool)
        hits = kb_search(pool, query, limit=5)
    print_kb_hits(query, hits, as_json=as_json)


corpus_app = typer.Typer(help="The research corpus (markdown and text files, full-text searched).", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("add")
@friendly
def corpus_add(paths: Optional[list[Path]] = typer.Argument(None, help="Markdown/text files or folders (default: the shipped sample corpus).")) -> None:
    """Ingest files into the corpus; content already there (same hash) is left alone."""
    from nodes.corpus import collect, ingest, shipped_corpus_dir

    files = collect(list(paths) if paths else [shipped_corpus_dir()])  # validated before any write
    with open_db(settings()) as pool:
        report = ingest(pool, files)
    out.print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged ({report.chunks} chunks written)")


@corpus_app.command("list")
@friendly
def corpus_list(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md).")) -> None:
    """The documents in the corpus."""
    from console.admin_display import print_corpus
    from nodes.corpus import list_documents

    with open_db(settings(), checkpoints=False) as pool:
        entries = list_documents(pool)
    print_corpus(entries, as_json=as_json)


policy_app = typer.Typer(help="Who must approve actions with money behind them (signoff.toml).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("load")
@friendly
def policy_load(path: Path = typer.Argument(..., help="A signoff.toml with [roles] and [gates] stages (docs/concepts.md: approval chains).")) -> None:
    """Load the approval policy into the database, for every process, as its newest version (the
    earlier ones are kept: `policy history`). Administrators only (the policy's `admins`).

    Example: signoff policy load examples/signoff.toml"""
    from checkpoint.identity import cli_identity, ensure_admin
    from checkpoint.policy import PolicyError, check_successor, current_policy, parse_policy, store_policy
    from nodes.knowledge import PathNotFound, read_file_argument

    text = read_file_argument(path, PolicyError, PathNotFound, expected="a signoff.toml", as_file="a signoff.toml file")
    policy = parse_policy(text, str(path))  # checked before any write
    with open_db(settings()) as pool:
        who, in_force = cli_identity(pool), current_policy(pool)
        ensure_admin(in_force, who, "loading a policy")
        check_successor(in_force, policy)
        version = store_policy(pool, policy, who.name, loaded_through=who.token_created_by)
    out.print(f"policy version {version} loaded from {safe_line(path)} by {safe_line(who.name)}: "
              f"{len(policy.roles)} roles, {len(policy.gates)} gates", soft_wrap=True)


@policy_app.command("history")
@friendly
def policy_history(as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout.")) -> None:
    """Every policy version loaded, oldest first: when, by whom, from which file."""
    from checkpoint.policy import history
    from console.admin_display import print_policy_history

    with open_db(settings()) as pool:
        versions = history(pool)
    print_policy_history(versions, as_json=as_json)


@policy_app.command("show")
@friendly
def policy_show(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """The approval policy in force (the defaults when none was loaded)."""
    from checkpoint.policy import current_policy
    from console.admin_display import print_policy

    with open_db(settings()) as pool:
        policy = current_policy(pool)
    print_policy(policy, as_json=as_json)


orders_app = typer.Typer(help="Orders that refunds are checked against.", no_args_is_help=True)
app.add_typer(orders_app, name="orders")


@orders_app.command("load")
@friendly
def orders_load(path: Optional[Path] = typer.Argument(None, help="A CSV with the header order_id,email,amount,currency,ordered_at,status (default: the demo orders).")) -> None:
    """Load orders; loading the same file again changes nothing.

    Example: signoff orders load orders.csv"""
    from nodes.orders import demo_orders, load_orders, read_orders_file

    orders = read_orders_file(path) if path is not None else demo_orders()  # validated before any write
    with open_db(settings()) as pool:
        written, unchanged = load_orders(pool, orders)
    out.print(f"{written} loaded, {unchanged} unchanged")


@orders_app.command("list")
@friendly
def orders_list(as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts.")) -> None:
    """The orders, newest first."""
    from console.admin_display import print_orders
    from nodes.orders import list_orders

    with open_db(settings()) as pool:
        orders = list_orders(pool)
    print_orders(orders, as_json=as_json)


@model_app.command("status")
@friendly
def model_status(as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md).")) -> None:
    """Whether the local model server runs, where, and since when."""
    from console.admin_display import print_model_server
    from nodes.local_model import server_status

    print_model_server(server_status(settings().home), as_json=as_json)


@model_app.command("stop")
@friendly
def model_stop() -> None:
    """Stop the local model server (it starts again on the next use)."""
    from nodes.local_model import stop_server

    out.print("stopped the local model server" if stop_server(settings().home) else "the local model server was not running")


# --- workers -----------------------------------------------------------------------------------


@app.command()
@friendly
def worker(
    concurrency: int = typer.Option(10, "--concurrency", "-c", min=1, max=1000, help="Threads run at once in this process."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=1, max=65535, help="Serve /metrics, /healthz and /readyz on this port."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address for --metrics-port (0.0.0.0: every interface)."),
) -> None:
    """Run threads from the queue until stopped (Ctrl-C/SIGTERM drains; again exits at once)."""
    from console.display import visible
    from runtime.worker import serve
    from observability.logs import make_logger

    pipe = PipeSafeStdout()

    def write(line: str) -> None:
        # Plain text, not rich: a worker logs a line per job, and rich's rendering cost a busy
        # worker measurable CPU. Untrusted parts are made visible, never raw.
        pipe.write(line + "\n")
        pipe.flush()

    log = make_logger(lambda line: write(visible(line, one_line=True)), write)  # SIGNOFF_LOG_FORMAT=json: one JSON object a line
    code = serve(concurrency, log=log, metrics=(metrics_host, metrics_port) if metrics_port else None)
    raise typer.Exit(code)


# --- reviewing from a browser or Slack -------------------------------------------------------------

token_app = typer.Typer(help="Reviewer tokens for the HTTP API and the web inbox.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
@friendly
def token_create(name: str = typer.Argument(..., help="The reviewer's name, recorded as the actor of their decisions.")) -> None:
    """Create a reviewer's token; it is shown once, only its hash is stored. Administrators only.

    Example: signoff token create "Dana Reviewer"
    """
    from checkpoint import tokens
    from checkpoint.identity import cli_identity, ensure_admin, ensure_may_mint
    from checkpoint.policy import current_policy

    tokens.valid_name(name)
    with open_db(settings(), checkpoints=False) as pool:
        who = cli_identity(pool)
        policy = current_policy(pool)
        ensure_admin(policy, who, "creating a reviewer token")
        ensure_may_mint(policy, who, name.strip())
        token = tokens.create(pool, name, created_by=who.name, created_through=who.token_created_by)
    out.file.write(token + "\n")
    out.file.flush()
    err.print(f"token for {safe_line(name.strip())} created: it is shown this once; send it as `Authorization: Bearer <token>` "
              "or paste it at the inbox's sign-in page", soft_wrap=True)


@token_app.command("revoke")
@friendly
def token_revoke(name: str = typer.Argument(..., help="The reviewer whose live token to revoke.")) -> None:
    """Revoke a reviewer's token (their API calls and browser sessions stop working at once). Administrators only."""
    from checkpoint import tokens
    from checkpoint.identity import cli_identity, ensure_admin
    from checkpoint.policy import current_policy

    tokens.valid_name(name)
    with open_db(settings(), checkpoints=False) as pool:
        who = cli_identity(pool)
        ensure_admin(current_policy(pool), who, "revoking a reviewer token")
        tokens.revoke(pool, name, revoked_by=who.name)
    out.print(f"revoked the token of {safe_line(name.strip())}")


@token_app.command("list")
@friendly
def token_list() -> None:
    """Reviewer tokens: name, created (by whom), last used, revoked (by whom); never the tokens themselves."""
    from checkpoint import tokens
    from console.admin_display import print_tokens

    with open_db(settings(), checkpoints=False) as pool:
        rows = tokens.list_tokens(pool)
    print_tokens(rows)


@app.command()
@friendly
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (anything but loopback needs TLS in front)."),
    port: int = typer.Option(8321, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve the HTTP API and the web inbox; decisions are finished by `signoff worker`."""
    from web.server import require_web_extra, serve as run_server

    if not host or any(not ch.isprintable() or ch.isspace() for ch in host):
        raise UsageError("--host must be an address or host name, like 127.0.0.1")
    require_web_extra()  # before the database starts: nothing to undo
    from observability.logs import make_logger
    from observability.usage import model_prices

    model_prices()  # a bad SIGNOFF_MODEL_PRICES fails here, not in each thread's API answer
    from console.terminal import log_line_writer

    log = make_logger(log_line_writer(out))  # SIGNOFF_LOG_FORMAT=json: one JSON object a line
    config = settings()
    with open_db(config) as pool:  # then a bad SIGNOFF_SECRET_KEY fails before the server starts
        run_server(pool, config.home, host, port, log=log,
                   warn=lambda line: err.print(f"warning: {safe_line(line)}", soft_wrap=True))


@app.command()
@friendly
def stats(
    since: str = typer.Option("7d", "--since", help="The period to look back over: 30m, 2h, 3d, 1w."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (fields in docs/json-output.md)."),
) -> None:
    """Threads by status, gate waits (median, p95), decisions by kind and reviewer, failures
    by reason, tokens and cost by model, over a recent period.

    Example: signoff stats --since 24h --json"""
    from datetime import datetime, timezone

    from checkpoint.listing import parse_duration
    from observability.stats import gather, print_stats
    from observability.usage import model_prices

    period = parse_duration(since, "--since")
    prices = model_prices()
    with open_db(settings(), checkpoints=False) as pool:
        found = gather(pool, datetime.now(timezone.utc) - period, prices)
    print_stats(found, period, json_output=as_json)


@app.command("workers")
@friendly
def list_workers() -> None:
    """The live workers: host, pid, since when, last heartbeat, threads running."""
    from checkpoint import workers as registry
    from console.admin_display import print_workers

    from runtime.blocked import print_blocked

    with open_db(settings()) as pool:
        rows = registry.live(pool)
        print_workers(rows)
        print_blocked(pool, lambda line: out.print(safe_line(line), soft_wrap=True))


@app.command()
@friendly
def watch(
    thread_id: str = typer.Argument(..., help="The thread to follow."),
    to_end: bool = typer.Option(False, "--to-end", help="Keep following through gates until the thread finishes."),
) -> None:
    """Follow a thread live wherever it runs, replaying what already happened.

    Example: signoff watch support-1a2b3c4d --to-end"""
    from checkpoint import threads
    from runtime.running import follow_and_report

    valid_thread_id(thread_id)
    with open_db(settings()) as pool:
        row = threads.get_existing(pool, thread_id)
        follow_and_report(pool, thread_id, 0, through_gates=to_end,
                          quiet_end=f"{thread_id} is {row.status}{' at gate ' + row.gate if row.gate else ''}; no progress was recorded for it")


def main() -> None:  # pragma: no cover - `python cli.py`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
