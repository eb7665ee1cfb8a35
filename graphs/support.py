"""Support escalation: classify -> look up the knowledge base -> billing | technical | general
agent -> resolved? draft reply : escalate (ticket) -> gate `review` -> send | redraft | holding reply.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from typing_extensions import NotRequired, TypedDict

from nodes.context import SignoffContext
from nodes.gates import Decision, gate_node
from nodes.knowledge import ensure_loaded
from nodes.resilient import AgentResult, CallRecord, ResilientAgentNode
from nodes.tools import current_thread_id, kb_search, open_ticket, resolve_ticket, send_reply

Intent = Literal["billing", "technical", "general"]
GATE = "review"
DEFAULT_MAX_REDRAFTS = 2
ESCALATE_WORD = "ESCALATE"
HOLDING_REPLY = (
    "Thank you for your patience. A team member will follow up with you personally "
    "as soon as possible."
)


class SupportInput(TypedDict):
    message: str
    email: NotRequired[str | None]
    max_redrafts: NotRequired[int]


class SupportOutput(TypedDict, total=False):
    outcome: Literal["replied", "holding"]
    reply: str
    ticket_id: int | None


class SupportState(SupportInput, total=False):
    intent: Intent
    passages: list[str]
    sources: list[str]
    answer: str
    draft: str
    ticket_id: int | None
    needs_human: bool
    error: str | None
    decision: Decision | None
    last_decision: Decision | None
    decisions: Annotated[list[Decision], operator.add]
    redrafts: int
    outcome: Literal["replied", "holding"]
    reply: str
    calls: Annotated[list[CallRecord], operator.add]


class IntentChoice(BaseModel):
    """What the customer's message is about."""

    intent: Intent = Field(description="billing, technical or general")


# --- model-calling nodes -------------------------------------------------------------------

CLASSIFY_PROMPT = (
    "Classify the customer message as billing, technical or general. Answer in JSON.\n"
    'Message: "I was charged twice" -> {"intent": "billing"}\n'
    'Message: "The app crashes when I log in" -> {"intent": "technical"}\n'
    'Message: "How do I delete my account?" -> {"intent": "general"}'
)


def classify_prompt(state: SupportState) -> list[Any]:
    return [SystemMessage(CLASSIFY_PROMPT), HumanMessage(f'Message: "{state["message"]}" ->')]


classify = ResilientAgentNode(
    "classify",
    classify_prompt,
    lambda state, result: {"intent": result.parsed.intent},  # type: ignore[union-attr]
    schema=IntentChoice,
    on_failure=lambda state, result: {"intent": "general"},
)


def agent_prompt(state: SupportState) -> list[Any]:
    articles = "\n\n".join(state.get("passages", [])) or "(no matching articles)"
    return [
        SystemMessage(
            f"You are a {state.get('intent', 'general')} support agent. Answer the customer in 2-4 "
            f"sentences using only these help articles. If they do not answer the question, "
            f"reply with the single word {ESCALATE_WORD}.\n\n{articles}"
        ),
        HumanMessage(state["message"]),
    ]


def make_agent(intent: Intent) -> ResilientAgentNode[SupportState]:
    return ResilientAgentNode(f"{intent}_agent", agent_prompt, lambda state, result: {"answer": result.text.strip()})


def redraft_prompt(state: SupportState) -> list[Any]:
    feedback = (state.get("last_decision") or {}).get("note", "")
    return [
        SystemMessage("Rewrite the support reply so that it follows the reviewer's feedback. Reply with the new text only."),
        HumanMessage(f"Customer: {state['message']}\n\nReply: {state.get('draft', '')}\n\nReviewer feedback: {feedback}"),
    ]


def _redrafted(state: SupportState, result: AgentResult) -> dict[str, Any]:
    return {"draft": result.text.strip(), "redrafts": state.get("redrafts", 0) + 1}


redraft = ResilientAgentNode(
    "redraft",
    redraft_prompt,
    _redrafted,
    # The old draft stays for the reviewer; the bound still advances so the loop ends.
    on_failure=lambda state, result: {"redrafts": state.get("redrafts", 0) + 1},
)


# --- plain nodes ---------------------------------------------------------------------------


def lookup_kb(state: SupportState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    pool = runtime.context.pool
    ensure_loaded(pool)
    articles = kb_search(pool, state["message"], category=state.get("intent"))
    if not articles:
        articles = kb_search(pool, state["message"])
    return {
        "passages": [f"## {a.title}\n{a.body}" for a in articles],
        "sources": [a.slug for a in articles],
    }


def draft_reply(state: SupportState) -> dict[str, Any]:
    return {"draft": state["answer"]}


def escalate(state: SupportState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    intent = state.get("intent", "general")
    ticket_id = open_ticket(runtime.context.pool, current_thread_id(), intent=intent, summary=state["message"])
    draft = (
        f"Thanks for getting in touch. I have passed your question to our {intent} team "
        f"(ticket #{ticket_id}); a specialist will reply with a full answer shortly."
    )
    return {"ticket_id": ticket_id, "draft": draft}


def send_approved_reply(state: SupportState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    pool, thread_id = runtime.context.pool, current_thread_id()
    send_reply(pool, thread_id, recipient=state.get("email"), kind="reply", body=state["draft"])
    if state.get("ticket_id"):
        resolve_ticket(pool, thread_id)
    return {"outcome": "replied", "reply": state["draft"]}


def send_holding_reply(state: SupportState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    pool, thread_id = runtime.context.pool, current_thread_id()
    ticket_id = state.get("ticket_id") or open_ticket(pool, thread_id, intent=state.get("intent", "general"), summary=state["message"])
    send_reply(pool, thread_id, recipient=state.get("email"), kind="holding", body=HOLDING_REPLY)
    return {"outcome": "holding", "reply": HOLDING_REPLY, "ticket_id": ticket_id}


# --- routers (pure) ------------------------------------------------------------------------


def route_after_classify(state: SupportState) -> Literal["lookup_kb", "escalate"]:
    return "escalate" if state.get("needs_human") else "lookup_kb"


def route_to_agent(state: SupportState) -> Literal["billing_agent", "technical_agent", "general_agent"]:
    return f"{state.get('intent', 'general')}_agent"  # type: ignore[return-value]


def route_after_agent(state: SupportState) -> Literal["draft_reply", "escalate"]:
    answer = state.get("answer", "")
    # startswith, not `in`: small models echo the prompt, which names the word itself
    resolved = bool(answer) and not state.get("needs_human") and bool(state.get("sources")) and not answer.lstrip().upper().startswith(ESCALATE_WORD)
    return "draft_reply" if resolved else "escalate"


def route_after_review(state: SupportState) -> Literal["send_approved_reply", "redraft", "send_holding_reply"]:
    decision = state.get("last_decision") or {}
    if decision.get("verdict") == "approved":
        return "send_approved_reply"
    if decision.get("verdict") == "rejected" and state.get("redrafts", 0) < state.get("max_redrafts", DEFAULT_MAX_REDRAFTS):
        return "redraft"
    return "send_holding_reply"


# --- wiring --------------------------------------------------------------------------------


def build_graph() -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer and interrupt_before=[GATE]."""
    graph = StateGraph(SupportState, context_schema=SignoffContext, input_schema=SupportInput, output_schema=SupportOutput)
    graph.add_node("classify", classify)
    graph.add_node("lookup_kb", lookup_kb)
    for intent in ("billing", "technical", "general"):
        graph.add_node(f"{intent}_agent", make_agent(intent))
    graph.add_node("draft_reply", draft_reply)
    graph.add_node("escalate", escalate)
    graph.add_node(GATE, gate_node(GATE))
    graph.add_node("redraft", redraft)
    graph.add_node("send_approved_reply", send_approved_reply)
    graph.add_node("send_holding_reply", send_holding_reply)

    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", route_after_classify)
    graph.add_conditional_edges("lookup_kb", route_to_agent)
    for intent in ("billing", "technical", "general"):
        graph.add_conditional_edges(f"{intent}_agent", route_after_agent)
    graph.add_edge("draft_reply", GATE)
    graph.add_edge("escalate", GATE)
    graph.add_conditional_edges(GATE, route_after_review)
    graph.add_edge("redraft", GATE)
    graph.add_edge("send_approved_reply", END)
    graph.add_edge("send_holding_reply", END)
    return graph
