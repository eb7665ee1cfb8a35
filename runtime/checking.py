"""`signoff graphs` (every graph: source, static gates, input keys, version, import error) and
`signoff graphs check` (every unfinished thread the graphs deployed here cannot resume)."""

from __future__ import annotations

from typing import Any

#: threads a deploy must not strand: they will run again
UNFINISHED = ("queued", "running", "waiting", "failed", "interrupted")


def graph_rows() -> list[dict[str, Any]]:
    from runtime.registry import entries
    from runtime.starting import input_keys
    from runtime.versions import version_of

    rows = []
    for entry in entries():
        before, after = entry.static_gates() if entry.graph is not None else ([], [])
        rows.append({
            "name": entry.name, "source": entry.source, "builtin": entry.builtin, "gates": {"before": before, "after": after},
            "input": input_keys(entry.graph) if entry.graph is not None else [],
            "version": version_of(entry) if entry.graph is not None else None, "error": entry.error,
        })
    return rows


def cannot_resume(pool: Any) -> tuple[list[dict[str, Any]], int]:
    """(the unfinished threads that cannot resume on the graphs here, with why; how many
    unfinished threads were checked). Signoff's own graphs too: an upgrade may change them."""
    from checkpoint import threads
    from checkpoint.errors import SignoffError
    from graphs.registry import GRAPHS
    from runtime.thread_runner import ThreadRunner
    from runtime.registry import get_entry
    from runtime.runner import InterruptRunner
    from runtime.versions import fingerprint, held_channels, incompatibility, version_of

    found: list[dict[str, Any]] = []
    runners: dict[str, Any] = {}
    rows = threads.list_by_status(pool, *UNFINISHED)
    for row in rows:
        item = {"thread_id": row.thread_id, "graph": row.graph, "status": row.status, "version": row.graph_version, "version_now": None}
        try:
            if row.graph not in runners:
                runners[row.graph] = (ThreadRunner(pool, GRAPHS[row.graph]) if row.graph in GRAPHS
                                      else InterruptRunner(pool, get_entry(row.graph)))
        except SignoffError as exc:
            found.append({**item, "reason": str(exc)})
            continue
        runner = runners[row.graph]
        item["version_now"] = version_of(runner.entry) if isinstance(runner, InterruptRunner) else fingerprint(runner.graph)
        snapshot = runner.snapshot(row.thread_id)
        if not snapshot.config:
            continue  # nothing saved yet: it starts from its input on whatever graph is here
        runner.row = row
        if isinstance(runner, InterruptRunner):
            runner._options = {}
        # the stored gate too: a graph without the gate's node no longer lists it as next
        gates = ([row.gate] if row.gate else []) + ([p.node for p in runner.pending(snapshot)]
                                                    if row.status == "waiting" and isinstance(runner, InterruptRunner) else [])
        reason = incompatibility(runner.graph, snapshot, gates, held_channels(runner.graph, snapshot))
        if reason is not None:
            found.append({**item, "reason": reason})
    return found, len(rows)
