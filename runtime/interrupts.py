"""A gate is whatever LangGraph pauses on: an interrupt point (interrupt_before/after, compiled
in or given per run) or an `interrupt(value)` anywhere, subgraphs and parallel branches
included. This module reads what a thread waits on from its checkpoint, recognises the two
public request shapes (Agent Inbox's HumanInterrupt list and LangChain's
HumanInTheLoopMiddleware request), turns a reviewer's decision into the value the graph is
resumed with (`Command(resume=...)`), and fingerprints what the reviewer saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from checkpoint.errors import InvalidInput

Kind = Literal["inbox", "hitl", "value", "before", "after"]
Verdict = Literal["approved", "rejected", "answered", "expired"]


@dataclass(frozen=True)
class Pending:
    """One question the thread waits on. `id` is LangGraph's interrupt id, or `before:NODE` /
    `after:NODE` for an interrupt point."""

    id: str
    node: str
    kind: Kind
    value: Any = None

    def visit(self, checkpoint_id: str) -> str:
        """The gate visit a decision is recorded against: one decision per interrupt and checkpoint."""
        return f"{checkpoint_id}#{self.id}"

    def actions(self) -> list[dict[str, Any]]:
        """The actions asked about: name, args, description, what the request allows."""
        if self.kind == "inbox":
            return [{"action": r["action_request"].get("action"), "args": r["action_request"].get("args"),
                     "description": r.get("description"), "allowed": _inbox_allowed(r)} for r in _inbox_requests(self.value)]
        if self.kind == "hitl":
            configs = {c.get("action_name"): c for c in self.value.get("review_configs") or [] if isinstance(c, dict)}
            return [{"action": a.get("name"), "args": a.get("args"), "description": a.get("description"),
                     "allowed": list((configs.get(a.get("name")) or {}).get("allowed_decisions") or ["approve", "edit", "reject"])}
                    for a in self.value.get("action_requests") or []]
        return []

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "node": self.node, "kind": self.kind, "value": jsonable(self.value), "actions": jsonable(self.actions())}


def classify(value: Any) -> Kind:
    if _inbox_requests(value):
        return "inbox"
    if isinstance(value, dict) and isinstance(value.get("action_requests"), list):
        return "hitl"
    return "value"


def _inbox_requests(value: Any) -> list[dict[str, Any]]:
    """The HumanInterrupt requests of an Agent Inbox interrupt (sent as a list; one alone too)."""
    items = value if isinstance(value, list) else [value]
    ok = bool(items) and all(isinstance(i, dict) and isinstance(i.get("action_request"), dict) and isinstance(i.get("config"), dict)
                             for i in items)
    return items if ok else []


def _inbox_allowed(request: dict[str, Any]) -> list[str]:
    config = request.get("config") or {}
    names = {"allow_accept": "accept", "allow_edit": "edit", "allow_respond": "response", "allow_ignore": "ignore"}
    return [answer for key, answer in names.items() if config.get(key)]


# --- reading the checkpoint -----------------------------------------------------------------------


def pending_of(graph: Any, snapshot: Any, options: dict[str, Any]) -> list[Pending]:
    """What the thread at `snapshot` waits on: its interrupt() questions, else the interrupt
    point it stopped at (with `options`' per-run points), else nothing."""
    asked = [Pending(i.id, task.name, classify(i.value), i.value) for task in snapshot.tasks for i in task.interrupts]
    if asked:
        return asked
    if not snapshot.tasks or not snapshot.config:
        return []
    before = _points(getattr(graph, "interrupt_before_nodes", ()), options.get("interrupt_before"))
    after = _points(getattr(graph, "interrupt_after_nodes", ()), options.get("interrupt_after"))
    if not before and not after:
        return []
    saved = graph.checkpointer.get_tuple(snapshot.config)
    if saved is None or not _updated_since_interrupt(saved.checkpoint):
        return []  # resumed past it already
    for task in snapshot.tasks:
        if _matches(task.name, before):
            return [Pending(f"before:{task.name}", task.name, "before", None)]
    if after and snapshot.parent_config:
        ran = graph.get_state(snapshot.parent_config).next
        for node in ran:
            if _matches(node, after):
                return [Pending(f"after:{node}", node, "after", None)]
    return []


def _points(compiled: Any, per_run: Any) -> list[str] | str:
    if compiled == "*" or per_run == "*":
        return "*"
    return list(compiled or ()) + list(per_run or ())


def _matches(node: str, points: list[str] | str) -> bool:
    return (points == "*" and not node.startswith("__")) or node in points


def _updated_since_interrupt(checkpoint: dict[str, Any]) -> bool:
    """LangGraph pauses at an interrupt point only if a channel changed since it last paused
    (the versions it saw at its last interrupt); resuming records them, so a checkpoint whose
    versions were all seen is one the run already went past."""
    from langgraph.constants import INTERRUPT

    seen = checkpoint.get("versions_seen", {}).get(INTERRUPT, {})
    versions = checkpoint.get("channel_versions", {})
    if not seen:
        return True
    return any(key not in seen or _newer(version, seen[key]) for key, version in versions.items())


def _newer(version: Any, seen: Any) -> bool:
    if isinstance(version, (int, float)) and isinstance(seen, (int, float)):
        return version > seen
    return str(version) > str(seen)  # PostgresSaver's versions are zero-padded strings


# --- what the reviewer saw ------------------------------------------------------------------------


def digest_of(pending: list[Pending], checkpoint_id: str) -> str:
    """Short fingerprint of the questions shown (ids and values), for `--expect`; an interrupt
    point has no value, so its checkpoint stands for what was shown."""
    shown = [[p.id, jsonable(p.value) if p.kind not in ("before", "after") else checkpoint_id] for p in pending]
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]


def jsonable(value: Any) -> Any:
    """A value as JSON would carry it (LangChain messages and pydantic models dumped, the rest
    by their string), so every state value can be shown and hashed."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    """JSON for what graph state holds beyond JSON's types: messages and models dumped,
    datetimes as ISO text, ids, sets and bytes as their plain forms, anything else as text."""
    from datetime import datetime
    from uuid import UUID

    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    for method in ("model_dump", "dict"):
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                return dump()
            except Exception:  # noqa: BLE001 - fall back to the string
                break
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def review_text(pending: list[Pending]) -> str:
    """What `pending`, `show`, notifications and the inbox show a reviewer, one block per question."""
    blocks = []
    for p in pending:
        if p.kind in ("before", "after"):
            blocks.append(f"[{p.id}] paused {p.kind} node {p.node}: approve to run on, reject to stop here")
            continue
        actions = p.actions()
        if actions:
            for a in actions:
                head = f"[{p.id}] {p.node}: {a['action']} {json.dumps(jsonable(a['args']), ensure_ascii=False, sort_keys=True)}"
                blocks.append(head + (f"\n  {a['description']}" if a.get("description") else "") + f"\n  allowed: {', '.join(a['allowed'])}")
        else:
            blocks.append(f"[{p.id}] {p.node} asks: {json.dumps(jsonable(p.value), ensure_ascii=False, sort_keys=True)}\n"
                          f"  answer with: signoff answer THREAD --value JSON --expect DIGEST")
    return "\n".join(blocks)


# --- answering ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A reviewer's decision on one question: the verdict recorded, and the value the graph is
    resumed with (None for an interrupt point: it runs on with no value)."""

    verdict: Verdict
    resume: Any
    #: for a rejected interrupt point: stop, do not run on
    stop: bool = False


def answer_for(p: Pending, verdict: Verdict, *, feedback: str | None = None, edit_args: dict[str, Any] | None = None,
               ignore: bool = False, value: Any = None) -> Answer:
    """The resume value for `verdict` on `p`, as its request's shape wants it; InvalidInput
    (one line, exit 2) for an answer the request does not allow."""
    if verdict == "answered":
        if p.kind in ("before", "after"):
            raise InvalidInput(f"{p.id} is an interrupt point, with nothing to answer: approve or reject it")
        return Answer("answered", value)
    if p.kind in ("before", "after"):
        if edit_args is not None or ignore:
            raise InvalidInput(f"{p.id} is an interrupt point: approve runs on, reject stops; it takes no --edit or --ignore")
        return Answer(verdict, None, stop=verdict != "approved")
    if p.kind == "inbox":
        return Answer(verdict, _inbox_answer(p, verdict, feedback, edit_args, ignore))
    if p.kind == "hitl":
        return Answer(verdict, _hitl_answer(p, verdict, feedback, edit_args, ignore))
    if verdict == "expired":
        raise InvalidInput(f"{p.id} asks a question only a person can answer")
    raise InvalidInput(f"interrupt {p.id} asks for a value, not a verdict: answer it with "
                       "`signoff answer THREAD --value JSON --expect DIGEST`")


def _inbox_answer(p: Pending, verdict: Verdict, feedback: str | None, edit_args: dict[str, Any] | None, ignore: bool) -> Any:
    requests = _inbox_requests(p.value)
    if edit_args is not None and len(requests) != 1:
        raise InvalidInput(f"interrupt {p.id} asks about {len(requests)} actions: --edit edits one; approve or reject them as they are")
    answers = []
    for request in requests:
        allowed = _inbox_allowed(request)
        action = request["action_request"].get("action")
        if verdict == "expired":
            kind = "ignore" if "ignore" in allowed else "response"
            answers.append({"type": kind, "args": None if kind == "ignore" else "the review deadline passed"})
            continue
        if verdict == "approved":
            kind = "edit" if edit_args is not None else "accept"
        elif ignore:
            kind = "ignore"
        elif feedback:
            kind = "response"
        else:
            raise InvalidInput(f"interrupt {p.id} needs a reason to reject {action!r}: pass --feedback TEXT, or --ignore to skip it")
        if kind not in allowed:
            raise InvalidInput(f"interrupt {p.id} does not allow {kind!r} for {action!r} (it allows {', '.join(allowed) or 'nothing'})")
        args: Any = None
        if kind == "edit":
            args = {"action": action, "args": edit_args}
        elif kind == "response":
            args = feedback
        answers.append({"type": kind, "args": args})
    return answers if isinstance(p.value, list) else answers[0]


def _hitl_answer(p: Pending, verdict: Verdict, feedback: str | None, edit_args: dict[str, Any] | None, ignore: bool) -> Any:
    actions = p.actions()
    if ignore:
        raise InvalidInput(f"interrupt {p.id} (HumanInTheLoopMiddleware) has no ignore: reject it with --feedback TEXT")
    if edit_args is not None and len(actions) != 1:
        raise InvalidInput(f"interrupt {p.id} asks about {len(actions)} actions: --edit edits one; approve or reject them as they are")
    decisions = []
    for a in actions:
        kind = {"approved": "edit" if edit_args is not None else "approve", "rejected": "reject", "expired": "reject"}[verdict]
        if kind not in a["allowed"]:
            raise InvalidInput(f"interrupt {p.id} does not allow {kind!r} for {a['action']!r} (it allows {', '.join(a['allowed'])})")
        if kind == "edit":
            decisions.append({"type": "edit", "edited_action": {"name": a["action"], "args": edit_args}})
        elif kind == "reject":
            decisions.append({"type": "reject", "message": feedback or ("the review deadline passed" if verdict == "expired" else "rejected")})
        else:
            decisions.append({"type": "approve"})
    return {"decisions": decisions}


def summary_line(pending: list[Pending]) -> str:
    """One line for `pending`: the first question's action and arguments (or value)."""
    first = pending[0]
    more = f" (+{len(pending) - 1} more)" if len(pending) > 1 else ""
    if first.kind in ("before", "after"):
        return f"paused {first.kind} {first.node}{more}"
    actions = first.actions()
    if actions:
        a = actions[0]
        return f"{first.node}: {a['action']} {json.dumps(jsonable(a['args']), ensure_ascii=False, sort_keys=True)}{more}"
    return f"{first.node} asks: {json.dumps(jsonable(first.value), ensure_ascii=False, sort_keys=True)}{more}"
