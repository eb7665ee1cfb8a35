"""The write <-> review loop, shared by the revision and research graphs (one copy, two users).

    write -> review -> (score < threshold and revisions < max) ? write : choose_draft
    choose_draft -> gate `publish` -> approved: publish_document | rejected: write | discard

Rounds: the loop's first write opens round 0; each rejection at the gate opens the next round,
in which the writer starts from the rejected document with the editor's note, and the revision
budget and best-draft tracking start afresh (the rejected draft can never win again). Rounds
are bounded by `max_rejections`; past it the thread ends unpublished, as support's redraft
loop does. So a thread makes at most (1 + max_rejections) * (1 + max_revisions) drafts.

Routers are pure functions of state: the limits are copied from the runtime context into
state when the thread starts, so a thread resumed under another configuration keeps them.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Callable, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, field_validator
from typing_extensions import TypedDict

from nodes import draft_checks
from nodes.context import SignoffContext
from nodes.gates import Decision, content_digest, gate_node
from nodes.publishing import publish_node, route_after_publish
from nodes.resilient import AgentResult, CallRecord, ResilientAgentNode

GATE = "publish"
DEFAULT_THRESHOLD = 0.8
DEFAULT_MAX_REVISIONS = 3
DEFAULT_MAX_REJECTIONS = 2


class DraftRecord(TypedDict):
    round: int
    revision: int
    text: str
    score: float | None
    feedback: str


class PublishedOutput(TypedDict, total=False):
    """What a thread of either writing graph returns: the document, or why there is none."""

    outcome: Literal["published", "not_published"]
    document: str | None
    path: str | None
    document_id: int | None
    reason: str
    warnings: list[str]


class WritingState(TypedDict, total=False):
    """The loop's part of a graph's state (graphs add their own input and fields)."""

    brief: str
    out_dir: str
    score_threshold: float
    max_revisions: int
    max_rejections: int
    round: int
    revisions: int
    draft: str
    score: float | None
    feedback: str
    #: why the last draft has no score although the reviewer did not fail (see `review`)
    not_reviewed: str | None
    #: the writer stopped at its token limit (finish_reason "length"): the draft is cut off
    draft_cut_off: bool
    best: DraftRecord | None
    drafts: Annotated[list[DraftRecord], operator.add]
    chosen: str | None
    document: str | None
    document_score: float | None
    gate_warning: str | None
    #: what the reviewer must know about the document at the gate (shown with it: review_content)
    flags: list[str]
    #: digests of every draft sent to the gate (each was rejected when the loop runs again)
    offered: Annotated[list[str], operator.add]
    warnings: Annotated[list[str], operator.add]
    needs_human: bool
    error: str | None
    decision: Decision | None
    last_decision: Decision | None
    decisions: Annotated[list[Decision], operator.add]
    outcome: Literal["published", "not_published"]
    reason: str
    path: str | None
    document_id: int | None
    #: set when the approved document could not be written; the thread waits at its gate again
    publish_error: str | None
    calls: Annotated[list[CallRecord], operator.add]


class Review(BaseModel):
    """A reviewer's verdict on one draft."""

    score: float = Field(ge=0, le=1, description="0 = unusable, 1 = ready to publish")
    feedback: str = Field(max_length=300, description="one sentence: what to improve")

    @field_validator("score", mode="before")
    @classmethod
    def _rescale(cls, value: Any) -> Any:
        # Small models often answer on a 0-10 or 0-100 scale despite the example; 8 there
        # plainly means 0.8 here. Anything else is left for the range check to reject.
        if isinstance(value, (int, float)) and 1 < value <= 10:
            return value / 10
        if isinstance(value, (int, float)) and 10 < value <= 100:
            return value / 100
        return value


# --- pure helpers ---------------------------------------------------------------------------


def rejections(state: WritingState) -> int:
    return sum(1 for d in state.get("decisions", []) if d.get("verdict") == "rejected")


def editor_notes(state: WritingState) -> list[str]:
    return [d["note"] for d in state.get("decisions", []) if d.get("verdict") == "rejected" and d.get("note")]


def is_new_round(state: WritingState) -> bool:
    """True when the writer runs for the first time after a rejection."""
    return state.get("round", 0) < rejections(state)


def loop_limits(state: WritingState, context: SignoffContext) -> dict[str, Any]:
    """The loop's bounds from the runtime context, unless the thread has them already."""
    if "score_threshold" in state:
        return {}
    return {"score_threshold": context.score_threshold, "max_revisions": context.max_revisions, "max_rejections": context.max_redrafts}


def review_content(values: dict[str, Any]) -> str:
    """What the reviewer signs off at the gate: the document, or why there is none; what the
    reviewer must know about it first, one `check:` line each, under the same digest."""
    document = values.get("document")
    if not document:
        return f"Nothing to publish: {values.get('error') or 'no draft was written'}"
    head = "".join(f"check: {flag}\n" for flag in values.get("flags") or [])
    return f"{head}\n{document}" if head else document


def outcome_line(values: dict[str, Any]) -> str:
    if values.get("outcome") == "published":
        return f"published {values.get('path')}"
    return f"not published: {values.get('reason', 'unknown')}"


# --- writer ---------------------------------------------------------------------------------

WRITER_PROMPT = (
    "You write short, clear markdown documents: a '# ' title line, then two to four short "
    "paragraphs. Reply with the document only."
)
# One worked exchange: a small model copies the shape of an answer more reliably than it
# follows a description of it.
WRITER_EXAMPLE = [
    HumanMessage("Brief: Explain why people should drink water.\n\nWrite the document."),
    AIMessage("# Why drink water\n\nWater keeps the body cool and helps it digest food.\n\nMost adults need about two litres a day, more in hot weather."),
]
#: Bounds what one prompt carries, so a long draft cannot crowd the brief out of a small context.
MAX_PREVIOUS_DRAFT_CHARS = 2000


def _previous_draft(state: WritingState) -> tuple[str | None, str | None]:
    """The draft to improve and the reviewer's feedback on it (none after a rejection: the
    editor's notes, always in the prompt, say what to change)."""
    if is_new_round(state):
        return state.get("chosen") or state.get("draft") or None, None
    return state.get("draft") or None, state.get("feedback") or "improve it"


IMPROVE, WRITE = "Write an improved version.", "Write the document."
#: the labels of the writer prompt's parts, and its fixed instructions: no draft repeats them
WRITER_LABELS = ("Brief:", "Editor's feedback", "Previous draft:", "Reviewer feedback:")
WRITER_INSTRUCTIONS = (WRITER_PROMPT, IMPROVE, WRITE)


def writer_prompt(state: WritingState) -> list[Any]:
    parts = [f"Brief: {state['brief']}"]
    if notes := editor_notes(state):
        parts.append("Editor's feedback (follow it):\n" + "\n".join(f"- {n}" for n in notes))
    previous, feedback = _previous_draft(state)
    if previous:
        parts.append(f"Previous draft:\n{previous[:MAX_PREVIOUS_DRAFT_CHARS]}")
        parts += [f"Reviewer feedback: {feedback}"] if feedback else []
        parts.append(IMPROVE)
    else:
        parts.append(WRITE)
    return [SystemMessage(WRITER_PROMPT), *WRITER_EXAMPLE, HumanMessage("\n\n".join(parts))]


def written(state: WritingState, text: str) -> str:
    """The writer's text without what it copied from its prompt and without sentences giving a
    contact or an amount that neither the brief nor the feedback gives: the checks every
    model draft gets (nodes/draft_checks.py)."""
    notes = [*editor_notes(state), state.get("feedback") or ""]
    text = draft_checks.without_prompt_text(text, labels=WRITER_LABELS, instructions=WRITER_INSTRUCTIONS, notes=notes)
    return draft_checks.without_unsupported(text, "\n".join([state.get("brief", ""), *notes]))


def _wrote(state: WritingState, result: AgentResult) -> dict[str, Any]:
    text = written(state, result.text.strip())
    if not text:
        error = "the model returned only its prompt or unsupported sentences" if result.text.strip() else "the model returned an empty draft"
        return {**_no_new_draft(state, error), "needs_human": True, "error": f"write: {error}"}
    fresh = is_new_round(state) or not state.get("draft")
    update: dict[str, Any] = {
        "draft": text, "revisions": 0 if fresh else state.get("revisions", 0) + 1, "round": rejections(state),
        "score": None, "feedback": "", "needs_human": False, "error": None,
        "draft_cut_off": result.cut_off,
    }
    if is_new_round(state):
        update["best"] = None
    return update


def _no_new_draft(state: WritingState, error: str) -> dict[str, Any]:
    warning = [f"writer failed ({error})"]
    if is_new_round(state) or not state.get("draft"):
        # Nothing new to offer: the rejected draft must not come back as if it were new.
        return {"draft": "", "best": None, "revisions": 0, "round": rejections(state), "warnings": warning}
    return {"revisions": state.get("revisions", 0) + 1, "warnings": warning}


_writer = ResilientAgentNode("write", writer_prompt, _wrote, on_failure=lambda state, result: _no_new_draft(state, str(result.record["error"])))


def write(state: WritingState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    """The writer; also fixes the loop's limits into state on the thread's first write."""
    return {**_writer(state, runtime), **loop_limits(state, runtime.context)}


# --- reviewer -------------------------------------------------------------------------------

REVIEW_PROMPT = (
    "Score the draft from 0 to 1 for how well it meets the brief, and say in one sentence "
    "what to improve. Answer in JSON.\n"
    'Example: {"score": 0.6, "feedback": "Add a concrete example."}'
)


def reviewer_prompt(state: WritingState) -> list[Any]:
    notes = editor_notes(state)
    requests = ("\n\nEditor's feedback:\n" + "\n".join(f"- {n}" for n in notes)) if notes else ""
    return [SystemMessage(REVIEW_PROMPT), HumanMessage(f"Brief: {state['brief']}{requests}\n\nDraft:\n{state['draft']}")]


def _record(state: WritingState, score: float | None, feedback: str) -> DraftRecord:
    return DraftRecord(round=state.get("round", 0), revision=state.get("revisions", 0), text=state["draft"], score=score, feedback=feedback)


def rejected_before(state: WritingState, text: str) -> bool:
    """Is `text` a draft the editor already rejected at the gate (the same digest)?"""
    return content_digest(text.strip()) in (state.get("offered") or [])


#: the reviewer's finding on a draft the editor already rejected, which the writer gets as feedback
UNCHANGED = "This is the draft the editor rejected, unchanged: rewrite it as the editor's feedback asks."
#: the flag at the gate on such a draft when no revision got past it
REJECTED_AGAIN = ("this is a document you already rejected, word for word: the writer did not act on the feedback; "
                  "reject it with other words, or approve it as it is")


def _reviewed(state: WritingState, result: AgentResult) -> dict[str, Any]:
    review: Review = result.parsed  # type: ignore[assignment]
    score, feedback = draft_checks.capped(review.score, review.feedback, state["draft"], cut_off=state.get("draft_cut_off", False))
    if rejected_before(state, state["draft"]):
        score, feedback = min(score, draft_checks.CAP), UNCHANGED
    record = _record(state, score, feedback)
    best = state.get("best")
    if best is None or best["score"] is None or score >= best["score"]:  # a tie goes to the newer draft
        best = record
    return {"score": score, "feedback": feedback, "not_reviewed": None, "drafts": [record], "best": best, "needs_human": False, "error": None}


def _review_failed(state: WritingState, result: AgentResult) -> dict[str, Any]:
    return {"drafts": [_record(state, None, "")], "warnings": [f"reviewer failed ({result.record['error']}): the last draft was not scored"]}


#: Calls SIGNOFF_REVIEW_MODEL when one is configured (SignoffContext.reviewer), else the writer's models.
_reviewer = ResilientAgentNode("review", reviewer_prompt, _reviewed, schema=Review, on_failure=_review_failed, models=SignoffContext.reviewer)


def review(state: WritingState, runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    """The reviewer, unless the judging model is one measured unable to judge (ModelHandle.judges:
    the local 0.5B scored the poor draft higher in 4 of 10 held-out pairs, lower in 2). Its score
    would pass or hold drafts at random and be shown at the gate as if it meant something, so
    the draft goes to the person at the gate unscored, with the reason and the setting that
    gives real scores."""
    if runtime.context.can_judge():
        return _reviewer(state, runtime)
    reason = (f"not scored: {runtime.context.reviewer().primary.name} cannot tell a good draft from a poor one; "
              "set SIGNOFF_REVIEW_MODEL=local:1.5b or openai:<model-name> for review scores")
    checks = [f"unscored draft: {finding}" for finding in draft_checks.findings(state["draft"], cut_off=state.get("draft_cut_off", False))]
    return {"drafts": [_record(state, None, "")], "not_reviewed": reason, **({"warnings": checks} if checks else {})}


# --- choosing, discarding -------------------------------------------------------------------


def choose_draft_node(compose: Callable[[Any, str], str]) -> Callable[[Any], dict[str, Any]]:
    """The node that picks what goes to the gate: the last draft if it met the threshold, else
    the best-scored draft of the round (not the last) with a warning; `compose` turns the
    chosen text into the document (a title, a sources section)."""

    # Typed as a plain dict on purpose: LangGraph narrows a node's input to the TypedDict it
    # is annotated with, and `compose` needs the graph's own fields (sources, topic).
    def choose_draft(state: dict[str, Any]) -> dict[str, Any]:
        """What `_choose` picks, remembered as offered, and flagged if the editor rejected it already."""
        chosen = _choose(state)
        text = chosen.get("chosen")
        if not text:
            return {**chosen, "flags": []}
        flags = [REJECTED_AGAIN] if rejected_before(state, text) else []
        return {**chosen, "offered": [content_digest(text.strip())], "flags": flags, "warnings": [*chosen.get("warnings", []), *flags]}

    def _choose(state: dict[str, Any]) -> dict[str, Any]:
        if not state.get("draft"):
            return {"chosen": None, "document": None, "document_score": None, "gate_warning": None}
        threshold = state.get("score_threshold", DEFAULT_THRESHOLD)
        score = state.get("score")
        if not state.get("needs_human") and score is not None and score >= threshold:
            return {"chosen": state["draft"], "document": compose(state, state["draft"]), "document_score": score, "gate_warning": None}
        best = state.get("best")
        pick = best if best is not None else _record(state, None, "")
        if state.get("needs_human"):
            why = f"the loop stopped early ({state.get('error')})"
        elif state.get("not_reviewed"):
            why = state["not_reviewed"]
        else:
            why = f"no draft reached the {threshold:.2f} threshold within {state.get('max_revisions', DEFAULT_MAX_REVISIONS)} revisions"
        scored = f"the best draft so far (revision {pick['revision']}, score {pick['score']:.2f})" if pick["score"] is not None else "the last draft, unreviewed"
        warning = f"{why}: sending {scored} to the gate"
        return {"chosen": pick["text"], "document": compose(state, pick["text"]), "document_score": pick["score"], "gate_warning": warning, "warnings": [warning]}

    return choose_draft


def discard(state: WritingState) -> dict[str, Any]:
    """End without publishing: rejected too often, expired, or nothing to publish."""
    verdict = (state.get("last_decision") or {}).get("verdict")
    if verdict == "rejected":
        reason = f"rejected {rejections(state)} times (the bound is {state.get('max_rejections', DEFAULT_MAX_REJECTIONS)} rewrites)"
    elif verdict == "approved":
        reason = f"nothing to publish ({state.get('error') or 'no draft'})"
    else:  # expired: the publish gate's default action is not to publish
        reason = f"the gate ended with {verdict or 'no decision'}, and its default is not to publish"
    return {"outcome": "not_published", "reason": reason, "warnings": [f"not published: {reason}"]}


# --- routers (pure) ------------------------------------------------------------------------


def route_after_write(state: WritingState) -> Literal["review", "choose_draft"]:
    return "review" if state.get("draft") and not state.get("needs_human") else "choose_draft"


def route_after_review(state: WritingState) -> Literal["write", "choose_draft"]:
    if state.get("needs_human") or state.get("not_reviewed"):  # nothing to revise against
        return "choose_draft"
    if (state.get("score") or 0.0) >= state.get("score_threshold", DEFAULT_THRESHOLD):
        return "choose_draft"
    if state.get("revisions", 0) >= state.get("max_revisions", DEFAULT_MAX_REVISIONS):
        return "choose_draft"
    return "write"


def route_after_publish_gate(state: WritingState) -> Literal["publish_document", "write", "discard"]:
    verdict = (state.get("last_decision") or {}).get("verdict")
    if verdict == "approved":
        return "publish_document" if state.get("document") else "discard"
    if verdict == "rejected" and rejections(state) <= state.get("max_rejections", DEFAULT_MAX_REJECTIONS):
        return "write"
    return "discard"


# --- wiring --------------------------------------------------------------------------------


def add_writing_loop(
    graph: StateGraph,
    *,
    graph_name: str,
    compose: Callable[[Any, str], str],
    route_after_gate: Callable[[Any], Any] = route_after_publish_gate,
    gate_destinations: list[str] | None = None,
) -> None:
    """Add the loop's nodes and edges to `graph`: enter at "write" (or at GATE with nothing to
    publish); it ends at END after publish_document or discard."""
    graph.add_node("write", write)
    graph.add_node("review", review)
    graph.add_node("choose_draft", choose_draft_node(compose))
    graph.add_node(GATE, gate_node(GATE))
    graph.add_node("publish_document", publish_node(graph_name))
    graph.add_node("discard", discard)

    graph.add_conditional_edges("write", route_after_write)
    graph.add_conditional_edges("review", route_after_review)
    graph.add_edge("choose_draft", GATE)
    graph.add_conditional_edges(GATE, route_after_gate, gate_destinations)
    graph.add_conditional_edges("publish_document", route_after_publish, {"retry_gate": GATE, "end": END})
    graph.add_edge("discard", END)
