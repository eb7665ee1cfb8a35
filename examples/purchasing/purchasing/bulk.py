"""A bulk order: each line is approved on its own, in parallel branches (Send), each branch
asking with its own Agent Inbox request; the lines approved are ordered."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send, interrupt
from typing_extensions import TypedDict


class Line(TypedDict):
    item: str
    quantity: int


class BulkState(TypedDict, total=False):
    lines: list[Line]
    ordered: Annotated[list[str], operator.add]


def review_line(line: Line) -> dict[str, Any]:
    request = {
        "action_request": {"action": "order_line", "args": dict(line)},
        "config": {"allow_accept": True, "allow_edit": False, "allow_respond": True, "allow_ignore": True},
        "description": f"order {line['quantity']} x {line['item']}",
    }
    response = interrupt([request])[0]
    return {"ordered": [f"{line['quantity']} x {line['item']}"] if response["type"] == "accept" else []}


def fan_out(state: BulkState) -> list[Send]:
    return [Send("review_line", line) for line in state["lines"]]


# langgraph.json names the uncompiled builder: the server that runs it compiles it.
builder = StateGraph(BulkState)
builder.add_node("review_line", review_line)
builder.add_conditional_edges(START, fan_out, ["review_line"])
builder.add_edge("review_line", END)
graph = builder.compile()
