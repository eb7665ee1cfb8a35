"""Purchase requests: price the order from the supplier catalogue in the store, ask a person to
approve the spend (an Agent Inbox request, from a subgraph), then place the order or not."""

from __future__ import annotations

import operator
import os
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import interrupt
from typing_extensions import TypedDict

CURRENCY = os.environ.get("PURCHASE_CURRENCY", "USD")
#: unit prices in minor units, used when the store has no catalogue entry for an item
DEFAULT_PRICES = {"laptop": 120000, "monitor": 25000, "chair": 18000}


class PurchaseInput(TypedDict):
    request: str
    item: str
    quantity: int


class PurchaseState(PurchaseInput, total=False):
    total_cents: int
    supplier: str
    approved_args: dict[str, Any]
    feedback: str
    outcome: str
    log: Annotated[list[str], operator.add]


def quote(state: PurchaseState, *, store: BaseStore) -> dict[str, Any]:
    entry = store.get(("catalogue",), state["item"])
    price = entry.value["unit_cents"] if entry else DEFAULT_PRICES.get(state["item"], 10000)
    supplier = entry.value["supplier"] if entry else "default supplier"
    return {"total_cents": price * state["quantity"], "supplier": supplier, "log": [f"quoted {state['item']}"]}


class ApprovalState(TypedDict, total=False):
    """The subgraph's own keys (the parent's `log` reducer is not shared with it)."""

    request: str
    item: str
    quantity: int
    total_cents: int
    supplier: str
    approved_args: dict[str, Any]
    feedback: str


def ask_approval(state: ApprovalState) -> dict[str, Any]:
    """Agent Inbox's request shape (HumanInterrupt), sent as a list; the answer is a list of
    HumanResponse: accept, edit (new args), response (text) or ignore."""
    args = {"item": state["item"], "quantity": state["quantity"], "total_cents": state["total_cents"], "currency": CURRENCY,
            "supplier": state["supplier"]}
    request = {
        "action_request": {"action": "place_order", "args": args},
        "config": {"allow_accept": True, "allow_edit": True, "allow_respond": True, "allow_ignore": False},
        "description": f"{state['request']}: spends {state['total_cents'] / 100:.2f} {CURRENCY}",
    }
    response = interrupt([request])[0]
    if response["type"] == "accept":
        return {"approved_args": args}
    if response["type"] == "edit":
        return {"approved_args": response["args"]["args"]}
    return {"feedback": response.get("args") or response["type"]}


approval = StateGraph(ApprovalState).add_node("ask_approval", ask_approval).add_edge(START, "ask_approval").compile()


def place_order(state: PurchaseState, *, store: BaseStore) -> dict[str, Any]:
    args = state.get("approved_args")
    if not args:
        return {"outcome": f"not ordered: {state.get('feedback') or 'declined'}"}
    key = f"{args['item']}-{args['quantity']}-{args['total_cents']}"
    store.put(("orders",), key, args)  # once per order: a re-run writes the same key
    return {"outcome": f"ordered {args['quantity']} x {args['item']} for {args['total_cents'] / 100:.2f} {args['currency']}",
            "log": ["ordered"]}


builder = StateGraph(PurchaseState, input_schema=PurchaseInput)
builder.add_node("quote", quote)
builder.add_node("approval", approval)
builder.add_node("place_order", place_order)
builder.add_edge(START, "quote")
builder.add_edge("quote", "approval")
builder.add_edge("approval", "place_order")
builder.add_edge("place_order", END)
graph = builder.compile()
