"""Which runner runs a thread, and the graph it runs on: Signoff's own graphs on ThreadRunner
(their gate node and `decision` key), every other graph on InterruptRunner, each bound to
Signoff's checkpointer (replacing any the graph was compiled with, as LangGraph's server
does) and, for project graphs, to a PostgresStore in the same database."""

from __future__ import annotations

from typing import Any

from runtime.registry import GraphEntry, get_entry


def bind(entry: GraphEntry, pool: Any) -> Any:
    """The entry's graph on Signoff's checkpointer (and store)."""
    from checkpoint.database import make_saver

    if entry.builtin:
        return entry.spec.build().compile(checkpointer=make_saver(pool), interrupt_before=list(entry.spec.gates))
    from runtime.store import store_for

    return entry.graph.copy(update={"checkpointer": make_saver(pool), "store": store_for(pool)})


def needs_async(graph: Any) -> bool:
    """True if a node of the graph, or of a subgraph, has only an async body: it runs on
    LangGraph's async path then (a sync run could not call it)."""
    try:
        graphs = [graph] + [sub for _, sub in graph.get_subgraphs(recurse=True)]
    except Exception:  # noqa: BLE001
        graphs = [graph]
    for g in graphs:
        for node in g.nodes.values():
            bound = getattr(node, "bound", None)
            if getattr(bound, "func", "") is None and getattr(bound, "afunc", None) is not None:
                return True
    return False


def runner_for(base: type, pool: Any, row: Any, context: Any = None) -> Any:
    """The runner of a stored thread; one line (exit 3 or 5) when its graph is unknown here or
    fails to load. A thread a worker had put aside for that runs again once it loads."""
    from graphs.registry import GRAPHS
    from runtime.runner import InterruptRunner

    if row.graph in GRAPHS:  # Signoff's own: compiled once, as before
        return base(pool, GRAPHS[row.graph], context)
    entry = get_entry(row.graph, thread_id=row.thread_id)
    if row.graph_error is not None:
        from runtime.blocked import clear

        clear(pool, row.thread_id)
    return InterruptRunner(pool, entry, context)
