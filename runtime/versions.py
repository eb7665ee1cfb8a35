"""Graph versions: the fingerprint of a graph's shape (nodes, the channels that trigger them,
its channels, and its subgraphs'), recorded with each thread at its start, and the check that
a thread's checkpoint can be resumed on the graph deployed now.

A new node or another prompt changes nothing a checkpoint holds, so it resumes; a thread
whose next node, gate or a channel it holds is gone cannot, and is refused rather than run
on a graph it does not fit (LangGraph itself would apply the newest graph without a word).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

from checkpoint.errors import Conflict


class VersionConflict(Conflict):
    """The graph deployed now cannot resume this thread."""


def structure(graph: Any) -> dict[str, Any]:
    nodes = {name: sorted(node.triggers) for name, node in graph.nodes.items()}
    channels = {name: type(channel).__name__ for name, channel in graph.channels.items()}
    try:
        subgraphs = {ns: structure(sub) for ns, sub in graph.get_subgraphs()}
    except Exception:  # noqa: BLE001 - a graph whose subgraphs cannot be listed is fingerprinted without them
        subgraphs = {}
    return {"nodes": nodes, "channels": channels, "subgraphs": subgraphs}


#: each compiled graph's fingerprint, worked out once: a compiled graph keeps its shape, and
#: every thread started, resumed or decided asks for it (a reloaded project's graph is a new object)
_fingerprints: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def fingerprint(graph: Any) -> str:
    try:
        return _fingerprints[graph]
    except (KeyError, TypeError):
        pass
    shape = json.dumps(structure(graph), sort_keys=True)
    found = hashlib.sha256(shape.encode("utf-8")).hexdigest()[:12]
    try:
        _fingerprints[graph] = found
    except TypeError:  # an object that cannot be weakly referenced: worked out each time
        pass
    return found


def version_of(entry: Any) -> str:
    """The version a thread records: the one the graph's langgraph.json entry declares
    (`"signoff": {"version": "..."}`), else the fingerprint of its shape."""
    declared = (entry.declared or {}).get("version") if not entry.builtin else None
    return str(declared) if isinstance(declared, (str, int)) and str(declared).strip() else fingerprint(entry.graph)


def incompatibility(graph: Any, snapshot: Any, gates: list[str], held: list[str]) -> str | None:
    """Why `graph` cannot resume the thread at `snapshot` (None: it can): a next node, the
    node its gate is in, or a channel its checkpoint holds that the graph no longer has."""
    nodes = set(graph.nodes)
    for name in snapshot.next:
        if name not in nodes:
            return f"its next node {name!r} is gone"
    for name in gates:
        if name not in nodes:
            return f"its gate's node {name!r} is gone"
    channels = set(graph.channels)
    for name in held:
        if name not in channels:
            return f"the channel {name!r} it holds is gone"
    return None


def held_channels(graph: Any, snapshot: Any) -> list[str]:
    """The channels the thread's latest checkpoint holds a value for."""
    if not snapshot.config:
        return []
    saved = graph.checkpointer.get_tuple(snapshot.config)
    return sorted((saved.checkpoint.get("channel_values") or {}).keys()) if saved else []
