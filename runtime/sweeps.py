"""Sweeps a person runs from the terminal over every thread that needs one: `signoff recover`
(resume threads whose process died mid-run) and `signoff expire` (apply the default action of
gates past their deadline). A running worker does both on its own (runtime/worker.py).

Each thread is swept on its own: one that fails is reported on its own line and the rest go
on; the command fails, naming them, only at the end.
"""

from __future__ import annotations

import typer

from checkpoint.errors import EXIT_FAILED, EXIT_INTERRUPTED
from checkpoint.settings import Settings
from console.display import safe_line
from runtime.session import make_context, open_db
from console.terminal import err, fail, failure_reason, out


def recover_abandoned(config: Settings) -> None:
    """Resume every abandoned thread here, or hand them all to a live worker."""
    from checkpoint.database import is_connection_error
    from checkpoint.threads import ThreadBusy
    from runtime.thread_runner import ThreadRunner, abandoned_threads
    from runtime.running import run_and_report

    failures: list[str] = []
    with open_db(config) as pool:
        found = abandoned_threads(pool)
        if not found:
            out.print("no abandoned threads")
            return
        from runtime.handoff import worker_available

        if worker_available(pool):
            from checkpoint import jobs

            for thread_id in found:
                jobs.enqueue(pool, thread_id, "recover")
                out.print(f"handed [bold]{thread_id}[/bold] to a worker: signoff watch {thread_id}")
            return
        context = make_context(config, pool)
        for thread_id in found:
            out.print(f"recovering [bold]{thread_id}[/bold]")
            try:
                runner = ThreadRunner.for_thread(pool, thread_id, context)
                run_and_report(thread_id, lambda sink, control: runner.resume(thread_id, sink, control))
            except ThreadBusy:
                out.print(f"  {thread_id} was picked up by another process; skipped")
            except typer.Exit as exc:
                if exc.exit_code == EXIT_INTERRUPTED:
                    raise
                if exc.exit_code:
                    failures.append(thread_id)
            except Exception as exc:  # noqa: BLE001 - one broken thread must not stop the others
                if is_connection_error(exc):
                    raise
                failures.append(thread_id)
                err.print(f"error: {thread_id} could not be recovered: {safe_line(failure_reason(exc))}", soft_wrap=True)
    if failures:
        fail(f"{len(failures)} of {len(found)} threads not recovered ({', '.join(failures)}): see `signoff show THREAD`", EXIT_FAILED)
    out.print(f"recovered {len(found)} thread{'s' if len(found) != 1 else ''}")


def expire_overdue(config: Settings) -> None:
    """Apply the default action of every gate past its deadline (audited as expired)."""
    from console.progress import ProgressPrinter
    from runtime.thread_runner import expire_due

    failures: list[str] = []

    def report(thread_id: str, exc: Exception) -> None:
        failures.append(thread_id)
        err.print(f"error: {thread_id} could not be expired: {safe_line(failure_reason(exc))}", soft_wrap=True)

    with open_db(config) as pool:
        stops = expire_due(pool, make_context(config, pool, eager=False), ProgressPrinter(out), on_error=report)
    for stop in stops:
        out.print(f"expired: {stop.thread_id} ({stop.graph}) -> {stop.status} {safe_line(stop.outcome)}")
    if failures:
        fail(f"{len(failures)} overdue threads not expired ({', '.join(failures)}): see `signoff show THREAD`", EXIT_FAILED)
    if not stops:
        out.print("no gate is past its deadline")
