"""Running a thread from a terminal: here, with progress and a drain on the first signal, or
handed to a worker (runtime/handoff.py) and followed live; `start`, `approve`, `reject`,
`resume` and `watch` all end in one of these, so they report and exit alike.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Optional

import typer

from checkpoint.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE
from checkpoint.settings import Settings
from console.display import safe_line
from console.review_display import print_waiting_stage
from runtime.session import make_context, open_db
from console.terminal import err, fail, first_line, out


def run_and_report(thread_id: str, run: Callable[[Any, Any], Any]) -> None:
    """Run with progress; first Ctrl-C/SIGTERM/SIGHUP drains at the next step boundary, a
    second exits at once (the last saved step stands, so the thread stays resumable)."""
    from langgraph.runtime import RunControl

    from checkpoint.database import is_connection_error
    from console.progress import ProgressPrinter

    printer = ProgressPrinter(out)
    control = RunControl()

    def on_signal(signum: int, frame: Any) -> None:
        if control.drain_requested:
            os._exit(EXIT_INTERRUPTED)
        control.request_drain(signal.Signals(signum).name)
        err.print(f"stopping at the next step boundary (again to exit now); resume with: signoff resume {thread_id}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop = run(printer, control)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        fail(f"lost the database mid-run ({first_line(exc)}); the thread is saved up to its last step: "
             f"run `signoff resume {thread_id}`", EXIT_UNAVAILABLE)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    printer.finish(stop)
    exit_for(stop)


def exit_for(stop: Any) -> None:
    """A failed run exits 1, an interrupted one 130; a stop at a gate or the end, 0."""
    if stop.status == "failed":
        raise typer.Exit(EXIT_FAILED)
    if stop.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def follow_and_report(pool: Any, thread_id: str, after_id: int, *, through_gates: bool = False, quiet_end: Optional[str] = None) -> None:
    """Show a thread a worker runs, as `run_and_report` shows an inline run. Ctrl-C stops
    the watching only: the worker runs on."""
    from runtime.handoff import follow
    from console.progress import ProgressPrinter

    printer = ProgressPrinter(out)
    try:
        stop = follow(pool.conninfo, pool, thread_id, printer, after_id=after_id, through_gates=through_gates, on_stop=printer.finish)
    except KeyboardInterrupt:
        printer.close()
        out.print(f"\nstopped watching; {thread_id} runs on in the worker: signoff watch {thread_id}")
        raise typer.Exit(0) from None
    if stop is None and quiet_end is not None:  # `watch` of a thread that recorded no stop: say where it stands
        printer.close()
        out.print(quiet_end)
        return
    if stop is None:
        printer.close()
        out.print(f"\nthe run of {thread_id} ended without a stop (its worker died?); a live worker takes it over, "
                  f"or run `signoff recover`: watch with `signoff watch {thread_id}`")
        raise typer.Exit(EXIT_FAILED)
    printer.finish(stop)
    exit_for(stop)


def follow_queued(pool: Any, thread_id: str, *, worker: bool, detach: bool) -> None:
    """A new thread is queued: print its id, then follow it as a worker runs it (or, with
    --detach, say how to follow it later)."""
    out.print(f"thread [bold]{thread_id}[/bold]")
    if detach:
        out.print(f"queued for a worker{'' if worker else '; no worker is running: start one with `signoff worker`'}; "
                  f"follow it with: signoff watch {thread_id}")
        return
    follow_and_report(pool, thread_id, 0)


def start_thread(config: Settings, graph: str, text: str, thread_id: str, options: dict[str, Any], *, detach: bool = False) -> None:
    """Run the thread here, or, with a live worker (or --detach), queue it for the workers
    and follow it (or return at once). The text, id and options are already checked."""
    from checkpoint import jobs, threads
    from checkpoint.threads import ThreadExists
    from runtime.handoff import worker_available
    from graphs.registry import get_spec
    from runtime.thread_runner import ThreadRunner

    with open_db(config) as pool:
        from checkpoint.identity import cli_identity

        options["actor"] = cli_identity(pool).name  # the requester: who runs this command, never a typed name
        worker = worker_available(pool)
        if detach or worker:
            spec = get_spec(graph)
            from runtime.registry import get_entry
            from runtime.versions import fingerprint  # the version it starts on, for `signoff graphs check`

            jobs.submit(pool, thread_id, graph, text, graph_input=spec.make_input(text, options), graph_version=fingerprint(get_entry(graph).graph),
                        deadline_hours=options["deadline_hours"], actor=options.get("actor", "cli"))  # ThreadExists if taken
            follow_queued(pool, thread_id, worker=worker, detach=detach)
            return
        context = make_context(config, pool)  # before anything is written: a bad model config changes nothing
        runner = ThreadRunner(pool, get_spec(graph), context)
        if threads.get(pool, thread_id) is not None:  # one error line, not a thread line and then one
            raise ThreadExists(f"thread {thread_id} already exists: pick another --thread id, or `signoff show {thread_id}`")
        out.print(f"thread [bold]{thread_id}[/bold]")
        run_and_report(thread_id, lambda sink, control: runner.start(thread_id, text, options, sink, control))
        print_waiting_stage(pool, thread_id)


def run_on(runner: Any, thread_id: str, verdict: str, name: str, *, detach: bool) -> None:
    """After the gate's decision: a live worker (or --detach) runs the thread on, this terminal
    following it; else it runs here."""
    from checkpoint import jobs
    from runtime.handoff import last_event_id, worker_available

    if detach or worker_available(runner.pool):
        after = last_event_id(runner.pool, thread_id)
        jobs.enqueue(runner.pool, thread_id, "decision")
        out.print(f"{verdict} [bold]{thread_id}[/bold] by {safe_line(name)}; handed to a worker")
        if detach:
            out.print(f"follow it with: signoff watch {thread_id}")
            return
        follow_and_report(runner.pool, thread_id, after)
        return
    out.print(f"{verdict} [bold]{thread_id}[/bold] by {safe_line(name)}; resuming")
    run_and_report(thread_id, lambda sink, control: runner.resume(thread_id, sink, control))


def resume_here(runner: Any, thread_id: str) -> None:
    """`signoff resume`: continue from the last saved step, saying so once it runs (so a
    refusal stays one line)."""

    def run(sink: Callable[[Any], None], control: Any) -> Any:
        first = [True]

        def announce_then(event: Any) -> None:
            if first:
                first.clear()
                out.print(f"resuming [bold]{thread_id}[/bold]")
            sink(event)

        return runner.resume(thread_id, announce_then, control)

    run_and_report(thread_id, run)
