"""The `signoff` command: thin; parses, calls into graphs/ and checkpoint/, renders."""

from __future__ import annotations

import functools
from contextlib import contextmanager
import getpass
import os
import re
import signal
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from checkpoint.settings import MAX_INPUT_BYTES, Settings

TyperGroup = typer.core.TyperGroup
_click: Any = getattr(typer.core, "_click", None) or getattr(typer.core, "click")  # typer vendors click since 0.20


class OneLineUsageErrors(TyperGroup):
    """Usage errors (unknown option, missing argument, malformed value) as one line on stderr,
    exit code 2, like every other error here, instead of click's multi-line usage block."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `signoff`, `signoff db`: the help, as before
                exc.show()
            else:
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err.print(f"error: {escape(exc.format_message())}{escape(hint)}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("error: aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(help="Durable agent workflows with human sign-off gates.", no_args_is_help=True, add_completion=False, cls=OneLineUsageErrors)
start_app = typer.Typer(help="Start a thread and stream it to its first stop.", no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations and status.", no_args_is_help=True)
kb_app = typer.Typer(help="The support knowledge base.", no_args_is_help=True)
app.add_typer(start_app, name="start")
app.add_typer(db_app, name="db")
model_app = typer.Typer(help="The local model server (llama.cpp, Gemma 3 270M).", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(model_app, name="model")

THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class UsageError(ValueError):
    """Bad input from the command line."""


def fail(message: str, code: int = 1) -> None:
    err.print(f"error: {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause or fix into one line and a non-zero exit."""
    from checkpoint.database import DatabaseUnavailable
    from checkpoint.embedded import EmbeddedPostgresError
    from checkpoint.settings import SettingsError
    from checkpoint.threads import ThreadBusy, ThreadExists
    from graphs.runner import AwaitingDecision, DigestMismatch, NotAtGate, ThreadNotFound
    from nodes.gates import AlreadyDecided, GateError
    from nodes.knowledge import ArticleFormatError
    from nodes.models import ModelConfigError

    known = (UsageError, DatabaseUnavailable, EmbeddedPostgresError, ThreadExists, DigestMismatch, NotAtGate,
             ThreadNotFound, AlreadyDecided, GateError, ArticleFormatError, ModelConfigError, ThreadBusy, AwaitingDecision,
             SettingsError)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except known as exc:
            fail(str(exc), 2 if isinstance(exc, UsageError) else 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


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
    return text.strip()


def valid_thread_id(thread_id: str) -> str:
    if not THREAD_ID.match(thread_id):
        raise UsageError(f"{thread_id!r} is not a thread id: use 1-64 letters, digits, '.', '_' or '-'")
    return thread_id


def actor(by: str | None) -> str:
    return valid_text(by or os.environ.get("SIGNOFF_USER") or getpass.getuser(), "reviewer name")


# --- plumbing ------------------------------------------------------------------------------


def settings() -> Settings:
    return Settings.from_env()


def open_db(config: Settings) -> Any:
    from checkpoint.database import connect

    return connect(config)


def make_context(config: Settings, pool: Any, *, eager: bool = True) -> Any:
    """The run context; `eager` builds the models now, so a bad model configuration fails
    before anything is written."""
    from nodes.context import SignoffContext
    from nodes.models import LazyRegistry, registry_from_settings
    from nodes.resilient import ResiliencePolicy

    models = LazyRegistry(lambda: registry_from_settings(config))
    if eager:
        models.resolve()
    return SignoffContext(models=models, pool=pool, policy=ResiliencePolicy(max_attempts=config.max_attempts))  # type: ignore[arg-type]


@contextmanager
def existing_thread(thread_id: str, *, runnable: bool = True) -> Iterator[Any]:
    """The runner of a thread that must exist, on an open pool; `runnable` also builds the
    models (before anything is written, so a bad model configuration changes nothing)."""
    from graphs.runner import ThreadRunner

    valid_thread_id(thread_id)
    config = settings()
    with open_db(config) as pool:
        runner = ThreadRunner.for_thread(pool, thread_id)
        if runnable:
            runner.context = make_context(config, pool)
        yield runner


def run_and_report(thread_id: str, run: Callable[[Any, Any], Any]) -> None:
    """Run with progress; first Ctrl-C/SIGTERM drains at the next step boundary, a second
    exits at once (the last saved step stands, so the thread stays resumable)."""
    from langgraph.runtime import RunControl

    from checkpoint.database import is_connection_error
    from graphs.progress import ProgressPrinter

    printer = ProgressPrinter(out)
    control = RunControl()

    def on_signal(signum: int, frame: Any) -> None:
        if control.drain_requested:
            os._exit(130)
        control.request_drain(signal.Signals(signum).name)
        err.print(f"stopping at the next step boundary (again to exit now); resume with: signoff resume {thread_id}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = run(printer, control)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        fail(f"lost the database mid-run ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}); "
             f"the thread is saved up to its last step: run `signoff resume {thread_id}`")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    printer.finish(stop)
    if stop.status == "failed":
        raise typer.Exit(1)
    if stop.status == "interrupted":
        raise typer.Exit(130)


def deadline_hours(graph: str, deadline: Optional[float], config: Settings) -> float:
    """--deadline, else SIGNOFF_<GRAPH>_DEADLINE_HOURS, else SIGNOFF_GATE_DEADLINE_HOURS."""
    if deadline is not None:
        if deadline <= 0:
            raise UsageError("--deadline must be a positive number of hours")
        return deadline
    per_graph = os.environ.get(f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS")
    try:
        hours = float(per_graph) if per_graph else config.gate_deadline_hours
    except ValueError:
        raise UsageError(f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS must be a number of hours") from None
    if hours <= 0:
        raise UsageError(f"SIGNOFF_{graph.upper()}_DEADLINE_HOURS must be a positive number of hours")
    return hours


def start_thread(graph: str, text: str, thread: Optional[str], options: dict[str, Any], deadline: Optional[float] = None) -> None:
    from checkpoint import threads
    from checkpoint.threads import ThreadExists
    from graphs.registry import get_spec
    from graphs.runner import ThreadRunner

    text = valid_text(text, "message" if graph == "support" else "text")
    thread_id = valid_thread_id(thread) if thread else f"{graph}-{uuid.uuid4().hex[:8]}"
    config = settings()
    options = {**options, "deadline_hours": deadline_hours(graph, deadline, config)}
    with open_db(config) as pool:
        context = make_context(config, pool)  # before anything is written: a bad model config changes nothing
        runner = ThreadRunner(pool, get_spec(graph), context)
        if threads.get(pool, thread_id) is not None:  # one error line, not a thread line and then one
            raise ThreadExists(f"thread {thread_id} already exists: pick another --thread id, or `signoff show {thread_id}`")
        out.print(f"thread [bold]{thread_id}[/bold]")
        run_and_report(thread_id, lambda sink, control: runner.start(thread_id, text, options, sink, control))


# --- commands ------------------------------------------------------------------------------


@start_app.command("support")
@friendly
def start_support(
    message: str = typer.Argument(..., help="The customer's message."),
    email: Optional[str] = typer.Option(None, "--email", help="Where the reply would be sent."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the review gate waits before its default action (holding reply)."),
) -> None:
    """Support escalation: classify, answer from the knowledge base or escalate, human review."""
    email = valid_text(email, "email") if email is not None else None
    start_thread("support", message, thread, {"email": email, "actor": actor(None)}, deadline)


def out_dir_option(out_dir: Optional[Path]) -> str:
    """--out resolved now (default SIGNOFF_HOME/published), so the thread publishes there even
    when it is approved from another shell."""
    from nodes.publishing import resolve_out_dir

    try:
        return resolve_out_dir(out_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@start_app.command("revision")
@friendly
def start_revision(
    brief: str = typer.Argument(..., help="What to write."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the published markdown (default: SIGNOFF_HOME/published)."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the publish gate waits before its default action (not published)."),
) -> None:
    """Revision loop: write, review and revise until good enough (bounded), then sign-off to publish."""
    start_thread("revision", brief, thread, {"out_dir": out_dir_option(out_dir), "actor": actor(None)}, deadline)


@start_app.command("research")
@friendly
def start_research(
    topic: str = typer.Argument(..., help="What to research in the corpus."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the published report (default: SIGNOFF_HOME/published)."),
    thread: Optional[str] = typer.Option(None, "--thread", help="Thread id to use (default: generated)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", help="Hours the publish gate waits before its default action (not published)."),
) -> None:
    """Research pipeline: plan, research the corpus in parallel, write and review, sign-off to publish."""
    start_thread("research", topic, thread, {"out_dir": out_dir_option(out_dir), "actor": actor(None)}, deadline)


@app.command()
@friendly
def pending() -> None:
    """Every thread waiting at a gate, oldest first (expired gates get their default first)."""
    from checkpoint import threads
    from graphs.runner import expire_due

    config = settings()
    with open_db(config) as pool:
        for stop in expire_due(pool, make_context(config, pool, eager=False), lambda event: None):
            out.print(f"expired: {stop.thread_id} ({stop.graph}) -> {stop.status} {escape(stop.outcome)}")
        rows = threads.list_by_status(pool, "waiting")
        digests = review_digests(pool, rows)
    if not rows:
        out.print("nothing is waiting for sign-off")
        return
    # One line per thread, never wrapped or cut to the terminal's width: the id and the digest
    # are what a reviewer copies into `approve THREAD --expect DIGEST`.
    now = datetime.now(timezone.utc)
    lines = [("thread", "graph", "gate", "age", "deadline", "digest", "summary")] + [
        (row.thread_id, row.graph, row.gate or "", age(now - row.updated_at),
         f"{row.deadline:%Y-%m-%d %H:%M}" if row.deadline else "-", digests[row.thread_id], row.summary[:70])
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    for line in lines:
        out.print("  ".join(escape(cell.ljust(width)) for cell, width in zip(line, widths)) + "  " + escape(line[6]), soft_wrap=True)


def review_digests(pool: Any, rows: list[Any]) -> dict[str, str]:
    """The digest of what each waiting thread asks a reviewer to sign off (as `show` prints
    it, and as `approve --expect` checks it)."""
    from graphs.registry import get_spec
    from graphs.runner import ThreadRunner
    from nodes.gates import content_digest

    runners: dict[str, Any] = {}
    digests = {}
    for row in rows:
        runner = runners.get(row.graph) or runners.setdefault(row.graph, ThreadRunner(pool, get_spec(row.graph)))
        digests[row.thread_id] = content_digest(runner.spec.review_content(runner.snapshot(row.thread_id).values))
    return digests


def age(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@app.command()
@friendly
def show(thread_id: str = typer.Argument(..., help="The thread to show.")) -> None:
    """A thread's state, the content awaiting sign-off, and its steps so far."""
    from checkpoint import threads
    from graphs.progress import token_counts
    from nodes.gates import content_digest

    with existing_thread(thread_id, runnable=False) as runner:
        pool = runner.pool
        snapshot = runner.snapshot(thread_id)
        row = threads.get(pool, thread_id)
        with pool.connection() as conn:
            decisions = conn.execute("SELECT gate, decision, actor, note, decided_at FROM approvals WHERE thread_id = %s ORDER BY id", (thread_id,)).fetchall()
    values = dict(snapshot.values)
    gate = runner.gate_of(snapshot)
    out.print(f"[bold]{thread_id}[/bold]  graph={row.graph}  status={row.status}" + (f"  gate={gate}" if gate else ""))
    out.print(f"summary: {escape(runner.spec.summarize(values))}")
    if gate:
        content = runner.spec.review_content(values)
        out.print(f"deadline: {row.deadline:%Y-%m-%d %H:%M %Z}" if row.deadline else "deadline: -")
        out.print(f"\n[bold]awaiting sign-off[/bold] (digest {content_digest(content)}):\n{escape(content)}\n")
    if values.get("error"):
        out.print(f"[yellow]error:[/yellow] {escape(str(values['error']))}")
    steps = Table("node", "model", "attempts", "latency", "tokens in/out", "error", title="steps", box=None, pad_edge=False)
    for call in values.get("calls", []):
        steps.add_row(call["node"], call.get("model") or "-", str(call["attempts"]), f"{call['latency_ms']}ms",
                      token_counts(call), escape(call.get("error") or ""))
    out.print(steps)
    for d in decisions:
        out.print(f"{d['decided_at']:%Y-%m-%d %H:%M:%S} {d['gate']}: {d['decision']} by {escape(d['actor'])}" + (f" - {escape(d['note'])}" if d["note"] else ""))


def decide_and_resume(thread_id: str, verdict: str, by: Optional[str], note: str, expect: Optional[str]) -> None:
    from graphs.runner import expire_if_due
    from nodes.gates import AlreadyDecided

    with existing_thread(thread_id) as runner:
        if expire_if_due(runner, thread_id, runner.context.clock(), lambda event: None) is not None:
            # The deadline decided before this person did: the same one line as any earlier decider.
            latest = runner.latest_decision(thread_id)
            raise AlreadyDecided(latest["actor"], latest["decided_at"], latest["decision"])  # type: ignore[index]
        runner.decide(thread_id, verdict, actor=actor(by), note=note, expect_digest=expect)  # type: ignore[arg-type]
        out.print(f"{verdict} [bold]{thread_id}[/bold] by {escape(actor(by))}; resuming")
        run_and_report(thread_id, lambda sink, control: runner.resume(thread_id, sink, control))


@app.command()
@friendly
def approve(
    thread_id: str = typer.Argument(..., help="The thread waiting at a gate."),
    note: str = typer.Option("", "--note", help="A note for the audit trail."),
    by: Optional[str] = typer.Option(None, "--by", envvar="SIGNOFF_USER", help="Who approves (default: your user name)."),
    expect: Optional[str] = typer.Option(None, "--expect", help="Refuse if the content's digest is not this (see `show`)."),
) -> None:
    """Approve what a thread waits on, then resume it to its next stop."""
    if note:
        valid_text(note, "note")
    decide_and_resume(thread_id, "approved", by, note, expect)


@app.command()
@friendly
def reject(
    thread_id: str = typer.Argument(..., help="The thread waiting at a gate."),
    feedback: str = typer.Option(..., "--feedback", help="What to change; it reaches the model that redrafts."),
    by: Optional[str] = typer.Option(None, "--by", envvar="SIGNOFF_USER", help="Who rejects (default: your user name)."),
    expect: Optional[str] = typer.Option(None, "--expect", help="Refuse if the content's digest is not this (see `show`)."),
) -> None:
    """Reject with feedback, then resume the thread (redraft, or its bounded default)."""
    decide_and_resume(thread_id, "rejected", by, valid_text(feedback, "feedback"), expect)


@app.command()
@friendly
def resume(thread_id: str = typer.Argument(..., help="A thread whose run died, was interrupted, or failed.")) -> None:
    """Continue a thread from its last saved step (after a crash, Ctrl-C or a database outage)."""
    with existing_thread(thread_id) as runner:

        def run(sink: Callable[[Any], None], control: Any) -> Any:
            first = [True]

            def announce_then(event: Any) -> None:  # said once it runs, so a refusal stays one line
                if first:
                    first.clear()
                    out.print(f"resuming [bold]{thread_id}[/bold]")
                sink(event)

            return runner.resume(thread_id, announce_then, control)

        run_and_report(thread_id, run)


@app.command()
@friendly
def recover() -> None:
    """Resume every thread whose process died mid-run (never one still running elsewhere)."""
    from checkpoint.threads import ThreadBusy
    from graphs.runner import ThreadRunner, abandoned_threads

    config = settings()
    with open_db(config) as pool:
        found = abandoned_threads(pool)
        if not found:
            out.print("no abandoned threads")
            return
        context = make_context(config, pool)
        for thread_id in found:
            out.print(f"recovering [bold]{thread_id}[/bold]")
            runner = ThreadRunner.for_thread(pool, thread_id, context)
            try:
                run_and_report(thread_id, lambda sink, control: runner.resume(thread_id, sink, control))
            except ThreadBusy:
                out.print(f"  {thread_id} was picked up by another process; skipped")


@app.command()
@friendly
def expire() -> None:
    """Apply the default action of every gate whose deadline has passed (audited as expired)."""
    from graphs.runner import expire_due
    from graphs.progress import ProgressPrinter

    config = settings()
    with open_db(config) as pool:
        stops = expire_due(pool, make_context(config, pool, eager=False), ProgressPrinter(out))
    for stop in stops:
        out.print(f"expired: {stop.thread_id} ({stop.graph}) -> {stop.status} {escape(stop.outcome)}")
    if not stops:
        out.print("no gate is past its deadline")


@app.command()
@friendly
def audit(thread_id: str = typer.Argument(..., help="The thread to audit.")) -> None:
    """Every decision, expiry, retry, fallback and side effect of a thread, with time and actor."""
    import json

    from checkpoint import threads

    valid_thread_id(thread_id)
    with open_db(settings()) as pool:
        if threads.get(pool, thread_id) is None:
            raise UsageError(f"no thread {thread_id!r}: list threads with `signoff pending`")
        with pool.connection() as conn:
            rows = conn.execute("SELECT at, actor, kind, detail FROM audit_events WHERE thread_id = %s ORDER BY at, id", (thread_id,)).fetchall()
    # One line per event, never wrapped into a table's columns, so it greps and pipes cleanly.
    width = max([len(r["actor"]) for r in rows] + [5])
    out.print(f"{'time':<19}  {'actor':<{width}}  {'event':<18}  detail", soft_wrap=True)
    for row in rows:
        out.print(f"{row['at']:%Y-%m-%d %H:%M:%S}  {escape(row['actor']):<{width}}  {row['kind']:<18}  {escape(json.dumps(row['detail'], default=str))}", soft_wrap=True)


@app.command("config")
@friendly
def show_config() -> None:
    """The configuration in force (secrets hidden)."""
    table = Table("variable", "value", "note", box=None, pad_edge=False)
    for row in settings().describe():
        table.add_row(*row)
    out.print(table)


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
def db_status() -> None:
    """Applied and pending migrations."""
    from checkpoint.database import connect
    from checkpoint.migrations import status

    with connect(settings(), migrate=False) as pool:
        rows = status(pool)
    for row in rows:
        when = f"applied {row.applied_at:%Y-%m-%d %H:%M:%S}" if row.applied_at else "pending"
        out.print(f"{row.version:03d}_{row.name}  {when}")


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
def kb_search_cmd(query: str = typer.Argument(..., help="What to look for.")) -> None:
    """Full-text search over the knowledge base."""
    from nodes.knowledge import ensure_loaded
    from nodes.tools import kb_search

    query = valid_text(query, "query")
    with open_db(settings()) as pool:
        ensure_loaded(pool)
        hits = kb_search(pool, query, limit=5)
    if not hits:
        out.print("no matching articles")
    for hit in hits:
        out.print(f"{hit.rank:.3f}  [{hit.category}] {hit.slug}: {escape(hit.title)}")


corpus_app = typer.Typer(help="The research corpus (markdown and text files, full-text searched).", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("add")
@friendly
def corpus_add(paths: Optional[list[Path]] = typer.Argument(None, help="Markdown/text files or folders (default: the shipped sample corpus).")) -> None:
    """Ingest files into the corpus; content already there (same hash) is left alone."""
    from nodes.corpus import CorpusError, collect, ingest, shipped_corpus_dir

    try:
        files = collect(list(paths) if paths else [shipped_corpus_dir()])  # validated before any write
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    with open_db(settings()) as pool:
        report = ingest(pool, files)
    out.print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged ({report.chunks} chunks written)")


@corpus_app.command("list")
@friendly
def corpus_list() -> None:
    """The documents in the corpus."""
    from nodes.corpus import list_documents

    with open_db(settings()) as pool:
        entries = list_documents(pool)
    if not entries:
        out.print("the corpus is empty: add files with `signoff corpus add PATH...` (no path: the sample corpus)")
        return
    width = max(len(entry.source) for entry in entries)
    for entry in entries:
        out.print(f"{escape(entry.source):<{width}}  {entry.chunk_count:>3} chunks  {entry.loaded_at:%Y-%m-%d %H:%M}  {escape(entry.title)}", soft_wrap=True)


@model_app.command("status")
@friendly
def model_status() -> None:
    """Whether the local model server runs, where, and since when."""
    from nodes.local_model import server_status

    info = server_status(settings().home)
    if info is None:
        out.print("local model server: not running (it starts on first use)")
        return
    started = datetime.fromtimestamp(info.started_at, timezone.utc)
    out.print(f"local model server: running, pid {info.pid}, {info.base_url}, model {info.model_alias}, "
              f"up {age(datetime.now(timezone.utc) - started)}\nweights: {info.model_path}")


@model_app.command("stop")
@friendly
def model_stop() -> None:
    """Stop the local model server (it starts again on the next use)."""
    from nodes.local_model import stop_server

    out.print("stopped the local model server" if stop_server(settings().home) else "the local model server was not running")


def main() -> None:  # pragma: no cover - `python cli.py`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
