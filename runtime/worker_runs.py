"""A worker's runner for a job, whatever graph its thread runs: the worker's claim and shared
compiled graph (runtime/worker.py WorkerRunner) with the runner the graph needs."""

from __future__ import annotations

from typing import Any

from runtime.worker import WorkerRunner
from runtime.runner import InterruptRunner


class ProjectWorkerRunner(WorkerRunner, InterruptRunner):
    """WorkerRunner's claim on the worker's session, InterruptRunner's gates and runs."""

    def __init__(self, pool: Any, entry: Any, context: Any, graph: Any, session: Any, progress: Any, held: bool) -> None:
        InterruptRunner.__init__(self, pool, entry, context, graph)
        self.session, self.progress, self.held = session, progress, held

    def _stream_options(self, thread_id: str, handle: Any) -> dict[str, Any]:
        return InterruptRunner._stream_options(self, thread_id, handle)

    def _run(self, thread_id: str, graph_input: Any, sink: Any, control: Any) -> Any:
        """A run that can be cancelled from another process (runtime/cancelling.py); a
        cancelled run's job closes instead of going back to the queue."""
        from dataclasses import replace

        from runtime.cancelling import cancellable, cancelled

        with cancellable(self.pool, thread_id, control):
            stop = InterruptRunner._run(self, thread_id, graph_input, sink, control)
        return replace(stop, status="cancelled") if stop.status == "interrupted" and cancelled(control) else stop


def worker_runner(job: Any, pool: Any, context: Any, graphs: Any, session: Any, writer: Any, held: bool) -> Any:
    """The runner for the job's thread; UnknownGraph / GraphUnavailable when its graph is not
    here or fails to load (the worker then sets the thread aside: runtime/blocked.py)."""
    from graphs.registry import GRAPHS
    from runtime.registry import get_entry

    if job.graph in GRAPHS:
        return WorkerRunner(pool, GRAPHS[job.graph], context, graphs.get(job.graph), session, writer, held)
    entry = get_entry(job.graph, thread_id=job.thread_id)
    return ProjectWorkerRunner(pool, entry, context, graphs.get(job.graph), session, writer, held)
