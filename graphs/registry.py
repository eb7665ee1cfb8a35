"""What the CLI needs to know about each graph, in one place: how to build it, where its
gates are, what a reviewer signs off, and how to summarise a thread in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from langgraph.graph import StateGraph

from graphs import research, revision, support
from nodes import refunds, writing
from nodes.publishing import resolve_out_dir


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
    #: the amount (minor units) of the action under review, if any: it gets an approval chain
    action_amount: Callable[[dict[str, Any]], int | None] = lambda values: None
    #: its currency (the policy's thresholds are in one currency; another needs every stage)
    action_currency: Callable[[dict[str, Any]], str | None] = lambda values: None
    #: may a reviewer hand the thread to a specialist (`reject --hand-over`) instead of asking
    #: for a redraft? Support: the customer gets the holding reply and a ticket is opened
    hands_over: bool = False


def _support_outcome(values: dict[str, Any]) -> str:
    ticket = f", ticket #{values['ticket_id']} open" if values.get("outcome") == "holding" and values.get("ticket_id") else ""
    return f"{values.get('outcome', 'finished')}{refunds.saga_outcome(values)}{ticket}"


def _ticket_tag(values: dict[str, Any]) -> str:
    """` ticket #3 (legal, police or press)`: the escalation and its hand-over topic (the
    playbook's match or the agent's choice), if it has one."""
    if not values.get("ticket_id"):
        return ""
    return f" ticket #{values['ticket_id']}" + (f" ({values['handover']})" if values.get("handover") else "")


SUPPORT = GraphSpec(
    name="support",
    build=support.build_graph,
    gates=(support.GATE,),
    make_input=lambda text, opts: {"message": text, "email": opts.get("email")},
    review_content=refunds.review_content,
    summarize=lambda v: f"[{v.get('intent', '?')}{_ticket_tag(v)}{refunds.action_tag(v)}] {v.get('message', '')}",
    outcome=_support_outcome,
    action_amount=refunds.action_amount,
    action_currency=refunds.action_currency,
    hands_over=True,
)


def _score(values: dict[str, Any]) -> str:
    score = values.get("document_score")
    return f"score {score:.2f}" if isinstance(score, (int, float)) else "unscored"


REVISION = GraphSpec(
    name="revision",
    build=revision.build_graph,
    gates=(revision.GATE,),
    # The output folder is fixed now, so a resume from another shell publishes to the same place.
    make_input=lambda text, opts: {"brief": text, "out_dir": resolve_out_dir(opts.get("out_dir"))},
    review_content=writing.review_content,
    summarize=lambda v: f"[{_score(v)}] {v.get('brief', '')}",
    outcome=writing.outcome_line,
)

RESEARCH = GraphSpec(
    name="research",
    build=research.build_graph,
    gates=(research.GATE,),
    make_input=lambda text, opts: {"topic": text, "out_dir": resolve_out_dir(opts.get("out_dir"))},
    review_content=writing.review_content,
    summarize=lambda v: f"[{len(v.get('covered') or [])}/{len(v.get('subtasks') or [])} researched, {_score(v)}] {v.get('topic', '')}",
    outcome=writing.outcome_line,
)

GRAPHS: dict[str, GraphSpec] = {spec.name: spec for spec in (SUPPORT, REVISION, RESEARCH)}


def get_spec(name: str) -> GraphSpec:
    try:
        return GRAPHS[name]
    except KeyError:
        raise KeyError(f"unknown graph {name!r}: choose one of {', '.join(GRAPHS)}") from None
