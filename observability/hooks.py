"""The calls the running code makes into observability: a run, a decision, a job claim.

Each costs one flag test when traces and metrics are off (the default), and none of them
can fail what it observes: a trace or metric that cannot be recorded is dropped.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from observability import metrics, tracing


class RunObserver:
    """What watches one run: its trace (spans from LangChain callbacks) and its metrics (from
    the run's events)."""

    def __init__(self, pool: Any, thread_id: str, graph: str, traced: bool, counted: bool) -> None:
        self.graph, self.counted = graph, counted
        self.trace = None
        if traced:
            try:
                from observability.run_trace import RunTrace

                self.trace = RunTrace(pool, thread_id, graph)
            except Exception:  # noqa: BLE001 - a run goes on untraced rather than not at all
                self.trace = None

    def event(self, event: dict[str, Any]) -> None:
        if self.counted:
            try:
                metrics.observe_event(self.graph, event)
            except Exception:  # noqa: BLE001 - metrics never stop a run
                pass

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The run's stream options with the span handler among its callbacks."""
        if self.trace is None:
            return options
        config = dict(options.get("config") or {})
        config["callbacks"] = [*(config.get("callbacks") or []), self.trace.handler()]
        return {**options, "config": config}

    def stopped(self, stop: Any) -> Any:
        self._end(stop.status, stop.error if stop.status == "failed" else None)
        return stop

    def _end(self, status: str, error: str | None = None) -> None:
        trace, self.trace = self.trace, None
        if trace is not None:
            try:
                trace.end(status, error)
            except Exception:  # noqa: BLE001
                pass


class _Unobserved(RunObserver):
    def __init__(self) -> None:
        self.trace, self.counted = None, False

    def event(self, event: dict[str, Any]) -> None:
        pass


UNOBSERVED = _Unobserved()


@contextmanager
def observing_run(pool: Any, thread_id: str, graph: str) -> Iterator[RunObserver]:
    """Observe one run of a thread (runtime/thread_runner.py wraps every run in it)."""
    traced = tracing.tracer() is not None
    if not traced and not metrics.enabled():
        yield UNOBSERVED
        return
    observer = RunObserver(pool, thread_id, graph, traced, metrics.enabled())
    try:
        yield observer
    except BaseException as exc:
        observer._end("failed", f"{exc.__class__.__name__}: {exc}")
        raise
    finally:
        observer._end("ended")


def decided(runner: Any, thread_id: str, gate: str, decision: str, actor: str) -> None:
    """A decision was recorded at `gate`: the wait there becomes a span of the thread's trace."""
    if tracing.tracer() is None:
        return
    try:
        row = runner.thread_row(thread_id)
        arrived = row.updated_at if row is not None and row.status == "waiting" else None
        tracing.record_gate_wait(runner.pool, thread_id, runner.spec.name, gate, decision, actor, arrived, datetime.now(timezone.utc))
    except Exception:  # noqa: BLE001 - the decision stands whatever its trace does
        pass


def jobs_claimed(claimed: list[Any]) -> None:
    if metrics.enabled():
        try:
            metrics.observe_claims(claimed)
        except Exception:  # noqa: BLE001
            pass
