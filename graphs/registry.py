"""What the CLI needs to know about each graph, in one place: how to build it, where its
gates are, what a reviewer signs off, and how to summarise a thread in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from langgraph.graph import StateGraph

from graphs import support


@dataclass(frozen=True)
class GraphSpec:
    name: str
    build: Callable[[], StateGraph]
    gates: tuple[str, ...]
    #: input dict for a new thread from the CLI's text argument and options
    make_input: Callable[[str, dict[str, Any]], dict[str, Any]]
    #: the text a reviewer is asked to approve, from the thread's state values
    review_content: Callable[[dict[str, Any]], str]
    #: one line for `pending`
    summarize: Callable[[dict[str, Any]], str]
    #: one line saying how a finished thread ended
    outcome: Callable[[dict[str, Any]], str]
    #: how long a gate waits before its default action applies
    deadline_hours: float = 24.0


def _support_outcome(values: dict[str, Any]) -> str:
    ticket = f", ticket #{values['ticket_id']} open" if values.get("outcome") == "holding" and values.get("ticket_id") else ""
    return f"{values.get('outcome', 'finished')}{ticket}"


SUPPORT = GraphSpec(
    name="support",
    build=support.build_graph,
    gates=(support.GATE,),
    make_input=lambda text, opts: {"message": text, "email": opts.get("email")},
    review_content=lambda v: v.get("draft", ""),
    summarize=lambda v: f"[{v.get('intent', '?')}{' ticket #' + str(v['ticket_id']) if v.get('ticket_id') else ''}] {v.get('message', '')}",
    outcome=_support_outcome,
)

GRAPHS: dict[str, GraphSpec] = {spec.name: spec for spec in (SUPPORT,)}


def get_spec(name: str) -> GraphSpec:
    try:
        return GRAPHS[name]
    except KeyError:
        raise KeyError(f"unknown graph {name!r}: choose one of {', '.join(GRAPHS)}") from None
