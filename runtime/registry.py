"""Every graph Signoff can run, by name: its own (support, revision, research) and the ones a
project's langgraph.json lists, behind one interface: a name, where it comes from, the graph
compiled without a checkpointer (or why it cannot be), and what the graph declares beyond
LangGraph (a GraphSpec: summaries, the content under review, amounts, hand-over, outcome lines).

Signoff's own graphs keep their gate node and `decision` state key (runtime/thread_runner.py runs
them); every other graph pauses where LangGraph pauses, on interrupt points and interrupt()
(runtime/runner.py). A project graph may not take a built-in graph's name.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from checkpoint.errors import NotFound, Unavailable


class UnknownGraph(NotFound):
    """No graph of that name here."""


class GraphUnavailable(Unavailable):
    """The graph is listed but cannot be loaded in this process."""


@dataclass(frozen=True)
class GraphEntry:
    name: str
    source: str
    #: what the graph declares beyond LangGraph (for a project graph, the generic defaults)
    spec: Any
    builtin: bool
    #: compiled without a checkpointer; None when it cannot be loaded
    graph: Any = None
    error: str | None = None
    #: what its langgraph.json entry declares for Signoff (amount, currency, deadline_hours, version)
    declared: Any = None

    def static_gates(self) -> tuple[list[str], list[str]]:
        """(interrupt_before, interrupt_after) compiled into the graph."""
        if self.builtin:
            return list(self.spec.gates), []
        graph = self.graph
        return _names(getattr(graph, "interrupt_before_nodes", ())), _names(getattr(graph, "interrupt_after_nodes", ()))


def _names(nodes: Any) -> list[str]:
    return ["*"] if nodes == "*" else list(nodes or ())


_builtins: dict[str, GraphEntry] = {}
_mutex = threading.Lock()


def builtin_names() -> list[str]:
    from graphs.registry import GRAPHS

    return list(GRAPHS)


def _builtin(name: str) -> GraphEntry:
    from graphs.registry import GRAPHS

    with _mutex:
        if name not in _builtins:
            spec = GRAPHS[name]
            module = spec.build.__module__
            _builtins[name] = GraphEntry(name, f"{module}:{spec.build.__name__} (built in)", spec, True,
                                         graph=spec.build().compile(interrupt_before=list(spec.gates)))
        return _builtins[name]


def find(name: str) -> GraphEntry | None:
    """The graph named `name`, loaded (or with its error); None if no graph has that name."""
    if name in builtin_names():
        return _builtin(name)
    from runtime.project import current_project

    project = current_project()
    if name not in project.sources:
        return None
    loaded = project.graph(name)
    spec = project_spec(name, loaded.graph, project.declared.get(name) or {}) if loaded.graph is not None else None
    return GraphEntry(name, loaded.source, spec, False, graph=loaded.graph, error=loaded.error, declared=project.declared.get(name) or {})


def entries() -> list[GraphEntry]:
    """Every graph: the built-ins, then the project's in its file's order, each loaded."""
    from runtime.project import current_project

    found = [_builtin(name) for name in builtin_names()]
    project = current_project()
    for name in project.names():
        if name in builtin_names():
            found.append(GraphEntry(name, project.sources[name], None, False,
                                    error=f"the name {name!r} is taken by a built-in graph: rename it in langgraph.json"))
            continue
        entry = find(name)
        assert entry is not None
        found.append(entry)
    return found


def all_names() -> list[str]:
    from runtime.project import current_project

    return builtin_names() + [n for n in current_project().names() if n not in builtin_names()]


def get_entry(name: str, *, thread_id: str | None = None) -> GraphEntry:
    """The loaded graph, or one line saying why there is none (UnknownGraph: exit 3;
    GraphUnavailable: exit 5)."""
    entry = find(name)
    whose = f"thread {thread_id} runs graph {name!r}, which" if thread_id else f"graph {name!r}"
    if entry is None:
        from runtime.project import current_project

        project = current_project()
        where = f"{project.path}" if project.path else "no langgraph.json in this folder (or --config / SIGNOFF_CONFIG)"
        if project.error:
            where += f": {project.error}"
        raise UnknownGraph(f"{whose} is not here ({where}): run from the project's folder, or pick one of {', '.join(all_names())}")
    if entry.error is not None:
        raise GraphUnavailable(f"{whose} cannot be loaded: {entry.error} (fix it, then `signoff graphs`)")
    return entry


def project_spec(name: str, graph: Any, declared: dict[str, Any]) -> Any:
    """The generic GraphSpec of a project graph: its static gates; a summary from the input
    (kept from the start); no content of its own under review (the interrupts are); the
    amount under review (an approval chain, `graph.gate` in the policy) and the gate deadline
    where its langgraph.json entry declares them."""
    from graphs.registry import GraphSpec

    amount_path, currency = declared.get("amount"), declared.get("currency")
    hours = declared.get("deadline_hours")
    extra: dict[str, Any] = {}
    if isinstance(amount_path, str):
        extra["action_amount"] = lambda values: _whole(value_at(values, amount_path))
        extra["action_currency"] = lambda values: (value_at(values, currency[1:]) if isinstance(currency, str) and currency.startswith("$")
                                                   else currency if isinstance(currency, str) else None)
    if isinstance(hours, (int, float)) and 0 < hours:
        extra["deadline_hours"] = float(hours)
    return GraphSpec(
        name=name,
        build=lambda: graph,
        gates=tuple(_names(getattr(graph, "interrupt_before_nodes", ())) + _names(getattr(graph, "interrupt_after_nodes", ()))),
        make_input=lambda text, opts: {},
        review_content=lambda values: "",
        summarize=lambda values: "",
        outcome=lambda values: "finished",
        **extra,
    )


def value_at(values: Any, path: str) -> Any:
    """The value at a dotted path of the state (`order.total_cents`), None if there is none."""
    for part in path.split("."):
        if isinstance(values, dict):
            values = values.get(part)
        elif isinstance(values, list) and part.isdigit() and int(part) < len(values):
            values = values[int(part)]
        else:
            return None
    return values


def _whole(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
