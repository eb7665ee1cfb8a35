"""The intake template: an async node sorts the request, then the graph asks the requester's
manager for a budget (a plain interrupt() value). Compiled without a checkpointer; the server
that runs it brings one. Exported as a factory, as LangGraph's server accepts."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict


class IntakeState(TypedDict, total=False):
    request: str
    category: str
    budget_cents: int


async def triage(state: IntakeState) -> dict[str, Any]:
    await asyncio.sleep(0)  # stands for an async model or API call
    text = state["request"].lower()
    return {"category": "hardware" if any(w in text for w in ("laptop", "monitor", "chair")) else "services"}


def ask_budget(state: IntakeState) -> dict[str, Any]:
    budget = interrupt({"question": f"What budget for this {state['category']} request?", "request": state["request"]})
    return {"budget_cents": int(budget)}


def make_graph(config: RunnableConfig) -> Any:
    builder = StateGraph(IntakeState)
    builder.add_node("triage", triage)
    builder.add_node("ask_budget", ask_budget)
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "ask_budget")
    builder.add_edge("ask_budget", END)
    return builder.compile()
