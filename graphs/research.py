"""Research pipeline: plan 3-5 subtasks -> one researcher per subtask, in parallel (Send), each
summarising corpus passages with their sources -> collect -> the shared write/review loop ->
gate `publish` -> publish a report with a sources section.

Degrades instead of sinking: a researcher that fails (after retries and the fallback model) is
recorded and the report says what is missing; if all fail, the thread goes straight to the gate
with the failure explained, where a rejection runs the researchers again (bounded like every
rejection) and an approval ends the thread unpublished.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_config
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field, StringConstraints
from typing_extensions import TypedDict

from nodes import draft_checks
from nodes.context import SignoffContext
from nodes.corpus import ensure_corpus, list_documents, search
from nodes.resilient import AgentResult, ResilientAgentNode, call_model, emitter
from nodes.writing import DEFAULT_MAX_REJECTIONS, GATE, PublishedOutput, WritingState, add_writing_loop, loop_limits, rejections, route_after_publish_gate

__all__ = ["GATE", "ResearchInput", "ResearchOutput", "ResearchState", "build_graph"]

PASSAGES_PER_SUBTASK = 3
MAX_SUMMARY_CHARS = 600  # two or three sentences; more is a small model rambling


class ResearchInput(TypedDict):
    topic: str
    #: where the report is published, resolved when the thread starts
    out_dir: str


ResearchOutput = PublishedOutput


class Finding(TypedDict):
    round: int
    index: int
    subtask: str
    summary: str
    sources: list[str]


class Failure(TypedDict):
    round: int
    index: int
    subtask: str
    error: str


class ResearcherInput(TypedDict):
    """What one researcher is sent: its subtask, numbered, in a research round."""

    topic: str
    subtask: str
    index: int
    round: int


class ResearchState(WritingState, ResearchInput, total=False):
    corpus_titles: list[str]
    subtasks: list[str]
    findings: Annotated[list[Finding], operator.add]
    failures: Annotated[list[Failure], operator.add]
    covered: list[Finding]
    missing: list[Failure]


Subtask = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=120)]


class Plan(BaseModel):
    """The questions one report needs answered."""

    subtasks: list[Subtask] = Field(min_length=3, max_length=5, description="3 to 5 short questions")


# --- plan ----------------------------------------------------------------------------------

PLAN_TASK = "Split the research topic into 3 to 5 short questions, one per subtask. Answer in JSON."
PLAN_PROMPT = (
    f"{PLAN_TASK}\n"
    'Topic: "coffee brewing" -> {"subtasks": ["How does grind size change extraction?", '
    '"What water temperature works best?", "How do brewing methods differ?"]}'
)
PLAN_LABELS = ("Topic:", "The library has articles on:")


def plan_prompt(state: ResearchState) -> list[Any]:
    titles = "; ".join(state.get("corpus_titles", [])[:8])
    library = f"\nThe library has articles on: {titles}." if titles else ""
    return [SystemMessage(PLAN_PROMPT + library), HumanMessage(f'Topic: "{state["topic"]}" ->')]


def _planned(state: ResearchState, result: AgentResult) -> dict[str, Any]:
    """The plan's subtasks, once each, without any the model copied from its prompt (each is
    researched and named in the report); none left: the generic plan."""
    unique = list(dict.fromkeys(result.parsed.subtasks))  # type: ignore[union-attr]
    kept = [s for s in unique if draft_checks.without_prompt_text(s, labels=PLAN_LABELS, instructions=(PLAN_TASK,))]
    return {"subtasks": kept} if kept else generic_plan(state, "the plan was only its prompt played back")


def generic_plan(state: ResearchState, why: str) -> dict[str, Any]:
    """No plan from any model: research three generic angles rather than stop."""
    topic = state["topic"]
    subtasks = [f"What is {topic}?", f"How is {topic} done in practice?", f"What are the risks and pitfalls of {topic}?"]
    return {"subtasks": subtasks, "needs_human": False, "error": None, "warnings": [f"planner failed ({why}): using a generic three-part plan"]}


def _plan_fallback(state: ResearchState, result: AgentResult) -> dict[str, Any]:
    return generic_plan(state, str(result.record["error"]))


plan = ResilientAgentNode("plan", plan_prompt, _planned, schema=Plan, on_failure=_plan_fallback)


# --- research (one per subtask, in parallel) -----------------------------------------------

RESEARCH_PROMPT = "Summarise what the passages say about the question in two or three sentences. Use only the passages."
RESEARCH_LABELS = ("Question:", "Passages:")


def researcher_prompt(task: ResearcherInput, passages: list[Any]) -> list[Any]:
    quoted = "\n\n".join(f"[{n}] {p.heading}\n{p.body}" for n, p in enumerate(passages, 1))
    return [SystemMessage(RESEARCH_PROMPT), HumanMessage(f"Question: {task['subtask']}\n\nPassages:\n{quoted}")]


def summarised(task: ResearcherInput, passages: list[Any], text: str) -> str:
    """The summary without what the model copied from its prompt (the question, the labels)
    and without sentences giving a contact or an amount no passage gives: the checks every
    model draft gets (nodes/draft_checks.py), since the report is written from these."""
    text = draft_checks.without_prompt_text(text, labels=RESEARCH_LABELS, instructions=(RESEARCH_PROMPT,), notes=[task["subtask"]])
    return draft_checks.without_unsupported(text, "\n".join(f"{p.heading}\n{p.body}" for p in passages))


def _task_id() -> str:
    """This task's id, as the `tasks` stream names it (LangGraph puts it in the namespace)."""
    return str(get_config()["configurable"].get("checkpoint_ns", "")).rpartition(":")[2]


def research(task: ResearcherInput, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    """Retrieve passages for one subtask and summarise them; a failure is recorded, not raised."""
    context = runtime.context
    emit = emitter(runtime)
    emit({"event": "researcher_started", "id": _task_id(), "index": task["index"], "subtask": task["subtask"]})

    def failed(error: str) -> list[Failure]:
        return [Failure(round=task["round"], index=task["index"], subtask=task["subtask"], error=error)]

    passages = search(context.pool, f"{task['subtask']} {task['topic']}", limit=PASSAGES_PER_SUBTASK)
    if not passages:
        return {"failures": failed("no passage in the corpus matches")}
    result = call_model("research", researcher_prompt(task, passages), context.models, context.policy, stream_tokens=False, emit=emit)
    update: dict[str, Any] = {"calls": [result.record]}
    summary = summarised(task, passages, result.text.strip()[:MAX_SUMMARY_CHARS])
    if not result.ok or not summary:
        empty = "the model returned only its prompt or unsupported sentences" if result.text.strip() else "the model returned an empty summary"
        update["failures"] = failed(result.record["error"] or empty)
    else:
        sources = list(dict.fromkeys(p.citation for p in passages))
        update["findings"] = [Finding(round=task["round"], index=task["index"], subtask=task["subtask"], summary=summary, sources=sources)]
    return update


# --- plain nodes ---------------------------------------------------------------------------


def load_corpus(state: ResearchState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    """Make sure there is a corpus (the shipped sample the first time) and fix the loop limits."""
    ensure_corpus(runtime.context.pool)
    titles = [entry.title for entry in list_documents(runtime.context.pool)]
    return {"corpus_titles": titles, **loop_limits(state, runtime.context)}


def collect(state: ResearchState) -> dict[str, Any]:
    """Gather this round's findings into the writer's brief; say what is missing."""
    current = rejections(state)
    found = sorted((f for f in state.get("findings", []) if f["round"] == current), key=lambda f: f["index"])
    failed = sorted((f for f in state.get("failures", []) if f["round"] == current), key=lambda f: f["index"])
    listing = "; ".join(f"[{f['index']}] {f['subtask']}: {f['error']}" for f in failed)
    if not found:
        error = f"all {len(failed)} researchers failed, so there is no report: {listing}"
        return {"covered": [], "missing": failed, "needs_human": True, "error": error, "document": None, "chosen": None, "gate_warning": None, "warnings": [error]}
    findings = "\n".join(f"[{f['index']}] {f['subtask']} {f['summary']}" for f in found)
    update: dict[str, Any] = {
        "covered": found, "missing": failed, "needs_human": False, "error": None,
        "brief": f'A short report on "{state["topic"]}" using only these findings:\n{findings}',
    }
    if failed:
        update["warnings"] = [f"{len(failed)} of {len(found) + len(failed)} researchers failed; the report lists what is missing: {listing}"]
    return update


def compose_report(state: ResearchState, text: str) -> str:
    """The chosen draft plus what the writer is not trusted to produce: sources and gaps."""
    body = text.strip()
    if not body.startswith("# "):
        body = f"# {state['topic'].strip()}\n\n{body}"
    lines = [body, "", "## Sources", ""]
    for finding in state.get("covered", []):
        lines.append(f"{finding['index']}. {finding['subtask']}")
        lines += [f"   - {source}" for source in finding["sources"]]
    if state.get("missing"):
        lines += ["", "## Not covered", "", "These subtasks could not be researched, so the report says nothing about them:", ""]
        lines += [f"- {m['subtask']} ({m['error']})" for m in state["missing"]]
    return "\n".join(lines) + "\n"


# --- routers (pure) ------------------------------------------------------------------------


def fan_out(state: ResearchState) -> list[Send]:
    """One researcher per subtask, all in the same step, so they run concurrently."""
    current = rejections(state)
    return [
        Send("research", ResearcherInput(topic=state["topic"], subtask=subtask, index=n, round=current))
        for n, subtask in enumerate(state.get("subtasks", []), 1)
    ]


def route_after_collect(state: ResearchState) -> Literal["write", "publish"]:
    return "write" if state.get("covered") else GATE  # type: ignore[return-value]


def route_after_research_gate(state: ResearchState) -> list[Send] | str:
    """As every publish gate, except that rejecting "nothing to report" researches again."""
    verdict = (state.get("last_decision") or {}).get("verdict")
    retry = verdict == "rejected" and rejections(state) <= state.get("max_rejections", DEFAULT_MAX_REJECTIONS)
    if retry and not state.get("covered"):
        return fan_out(state)
    return route_after_publish_gate(state)


# --- wiring --------------------------------------------------------------------------------


def build_graph() -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer and interrupt_before=[GATE]."""
    graph = StateGraph(ResearchState, context_schema=SignoffContext, input_schema=ResearchInput, output_schema=ResearchOutput)
    graph.add_node("load_corpus", load_corpus)
    graph.add_node("plan", plan)
    graph.add_node("research", research)
    graph.add_node("collect", collect)
    add_writing_loop(
        graph, graph_name="research", compose=compose_report,
        route_after_gate=route_after_research_gate, gate_destinations=["research", "publish_document", "write", "discard"],
    )

    graph.add_edge(START, "load_corpus")
    graph.add_edge("load_corpus", "plan")
    graph.add_conditional_edges("plan", fan_out, ["research"])
    graph.add_edge("research", "collect")
    graph.add_conditional_edges("collect", route_after_collect)
    return graph
