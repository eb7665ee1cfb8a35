"""Each project graph bound to the API's database once, for reading threads' state.

Binding copies the compiled graph with Signoff's checkpointer and store; reading a run's
result through a thread runner did that (and read the thread's row) on every `runs.wait`.
A bound graph is safe to read from many request threads at once (the worker shares one the
same way), and a graph the project reloads is bound again."""

from __future__ import annotations

import threading
from typing import Any

_bound: dict[tuple[int, str], tuple[Any, Any]] = {}
_mutex = threading.Lock()


def bound_graph(pool: Any, entry: Any) -> Any:
    """The entry's graph on the pool's checkpointer and store, bound at its first use."""
    from runtime.runs import bind

    key = (id(pool), entry.name)
    with _mutex:
        held = _bound.get(key)
    if held is not None and held[0] is entry.graph:
        return held[1]
    graph = bind(entry, pool)
    with _mutex:
        _bound[key] = (entry.graph, graph)  # keeps the loaded graph alive: its identity marks a reload
    return graph
