"""The refund path, wired into a graph that has a review gate and the support graph's two
reply nodes (`send_approved_reply`, `send_holding_reply`):

    extract_refund -> check_refund -> propose_refund | explain_refund -> GATE
    GATE approved with a proposed refund -> place_credit_note -> issue_refund
        -> send_approved_reply                                    (refunded: the confirmation)
        -> void_credit_note -> send_holding_reply                 (refused: compensate, hold)
    place_credit_note refused -> send_holding_reply               (nothing to compensate)

The graph routes into it with `starts_refund` (after classification) and `refund_approved`
(after the gate); everything else about the path lives here and in nodes/refunds.py and
nodes/refund_saga.py.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from nodes.refund_saga import issue_refund, place_credit_note, route_after_credit_note, route_after_refund, void_credit_note
from nodes.refunds import check_refund, explain_refund, extract_refund, proposed_action, propose_refund, route_after_check, wants_refund

ENTRY = "extract_refund"
EXECUTE = "place_credit_note"
NODES = ("extract_refund", "check_refund", "propose_refund", "explain_refund", "place_credit_note", "issue_refund", "void_credit_note")


def starts_refund(state: dict[str, Any]) -> bool:
    """The message asks for money back: take the refund path."""
    return wants_refund(state.get("message", ""))


def refund_approved(state: dict[str, Any]) -> bool:
    """The approved content includes a refund action: execute it before the reply goes out."""
    return proposed_action(state) is not None


def add_refund_path(graph: StateGraph, *, gate: str) -> None:
    graph.add_node("extract_refund", extract_refund)
    graph.add_node("check_refund", check_refund)
    graph.add_node("propose_refund", propose_refund)
    graph.add_node("explain_refund", explain_refund)
    graph.add_node("place_credit_note", place_credit_note)
    graph.add_node("issue_refund", issue_refund)
    graph.add_node("void_credit_note", void_credit_note)
    graph.add_edge("extract_refund", "check_refund")
    graph.add_conditional_edges("check_refund", route_after_check)
    graph.add_edge("propose_refund", gate)
    graph.add_edge("explain_refund", gate)
    graph.add_conditional_edges("place_credit_note", route_after_credit_note)
    graph.add_conditional_edges("issue_refund", route_after_refund)
    graph.add_edge("void_credit_note", "send_holding_reply")
