"""One thread's history as its page in the inbox shows it: a timeline of every step, retry,
fallback, gate visit, decision, notification and side effect; every draft a reviewer saw with
its digest and what changed from the draft before; and what was finally sent or published.

Drafts are read back from the checkpoint each decision was made at (approvals.checkpoint_id),
through LangGraph's `get_state`, and shown with the graph's own `review_content`, so a draft
here is byte for byte what the gate showed and its digest is the one approved or rejected.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from checkpoint import history


@dataclass(frozen=True)
class Draft:
    gate: str
    visit: str
    digest: str
    #: None when the checkpoint it was shown at is no longer kept (`db prune`)
    content: Optional[str]
    #: the gate decision for this visit (None: still waiting)
    decision: Optional[dict[str, Any]]
    #: unified-diff lines against the draft before: (kind, text), kind in add/del/hunk/same
    diff: list[tuple[str, str]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str
    title: str
    details: list[str] = field(default_factory=list)
    warn: bool = False


@dataclass(frozen=True)
class ThreadHistory:
    steps: list[dict[str, Any]]
    timeline: list[Entry]
    drafts: list[Draft]
    sent: dict[str, list[dict[str, Any]]]
    chain: Optional[dict[str, Any]]


def diff_lines(before: str, after: str) -> list[tuple[str, str]]:
    """What changed from one draft to the next, line by line (difflib's unified diff)."""
    out = []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = "hunk" if line.startswith("@@") else "add" if line.startswith("+") else "del" if line.startswith("-") else "same"
        out.append((kind, line))
    return out


def prices() -> dict[str, tuple[float, float]]:
    """SIGNOFF_MODEL_PRICES (observability/usage.py), or none when unset or unusable: a page
    shows tokens without a cost rather than fail (`signoff config` says what is wrong)."""
    from checkpoint.settings import SettingsError
    from observability.usage import model_prices

    try:
        return model_prices()
    except SettingsError:
        return {}


def tokens_of(call: dict[str, Any], priced: Optional[dict[str, tuple[float, float]]] = None) -> str:
    """`in/out` tokens of a model call, and its cost when its model has a price; `-` for none."""
    from observability.usage import call_cost

    ins, outs = call.get("input_tokens"), call.get("output_tokens")
    text = f"{ins if ins is not None else '-'}/{outs if outs is not None else '-'}" if ins is not None or outs is not None else "-"
    cost = call_cost(call, prices() if priced is None else priced)
    return text + (f", cost {cost:.6f}" if cost is not None else "")


def step_rows(events: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step: a node's run (when, how long, its warnings) and each model call in it
    (model, attempts, latency, tokens, cost where recorded). From the progress events; from
    the state's call records when a thread has none (it ran before they were kept)."""
    rows = []
    for stored in events:
        event = stored["event"]
        if event.get("event") != "node_end":
            continue
        calls = [c for c in event.get("calls") or [] if isinstance(c, dict)]
        warnings = [str(w) for w in ((event.get("update") or {}).get("warnings") or [])]
        rows.append({"at": stored["at"], "node": event.get("node"), "duration_ms": round(float(event.get("duration") or 0) * 1000),
                     "calls": calls, "warnings": warnings, "error": event.get("error")})
    if rows:
        return rows
    calls = [c for c in values.get("calls") or [] if isinstance(c, dict)]
    return [{"at": None, "node": c.get("node"), "duration_ms": c.get("latency_ms"), "calls": [c], "warnings": [], "error": c.get("error")}
            for c in calls]


def _timeline(pool: Any, thread_id: str, events: list[dict[str, Any]], visits: list[dict[str, Any]], sent: dict[str, Any]) -> list[Entry]:
    from checkpoint.audit import events_of
    from checkpoint.notifications import of_thread

    entries: list[Entry] = []
    for stored in events:
        event, at = stored["event"], stored["at"]
        kind = event.get("event")
        if kind == "node_end":
            calls = [c for c in event.get("calls") or [] if isinstance(c, dict)]
            details = [f"{c.get('model') or '-'}: {c.get('attempts') or 1} attempt(s), {c.get('latency_ms') or 0} ms, tokens {tokens_of(c)}"
                       + (f", error {c['error']}" if c.get("error") else "") for c in calls]
            warnings = [str(w) for w in ((event.get("update") or {}).get("warnings") or [])]
            entries.append(Entry(at, "step", f"{event.get('node')} ({float(event.get('duration') or 0):.2f} s)",
                                 details + [f"warning: {w}" for w in warnings] + ([f"error: {event['error']}"] if event.get("error") else []),
                                 warn=bool(warnings or event.get("error"))))
        elif kind in ("retry", "fallback"):
            entries.append(Entry(at, kind, f"{kind} in {event.get('node')}",
                                 [f"{k}: {v}" for k, v in event.items() if k not in ("event", "node") and v not in (None, "")], warn=True))
        elif kind == "stop":
            where = f" at gate {event.get('gate')}" if event.get("gate") else ""
            entries.append(Entry(at, "stop", f"stopped: {event.get('status')}{where}",
                                 [f"digest {event['digest']}"] if event.get("digest") else ([str(event["error"])] if event.get("error") else []),
                                 warn=event.get("status") == "failed"))
        elif kind == "run_started":
            entries.append(Entry(at, "run", f"run started by worker {event.get('worker')} ({event.get('kind')})"))
    for visit in visits:
        for stage in visit["stages"]:
            entries.append(Entry(stage["decided_at"], "stage", f"stage {stage['stage']} approved by {stage['actor']}",
                                 [f"role {stage['role']}"] if stage["role"] else []))
        verdict = "handed over" if visit["handover"] else visit["decision"]
        entries.append(Entry(visit["decided_at"], "decision", f"{visit['gate']}: {verdict} by {visit['actor']}",
                             ([visit["note"]] if visit["note"] else []) + ([f"digest {visit['digest']}"] if visit["digest"] else []),
                             warn=visit["decision"] != "approved"))
    for n in of_thread(pool, thread_id):
        if n["status"] not in ("sent", "failed"):
            continue  # a reminder or expiry notice still scheduled, or cancelled by the decision: nothing was told yet
        entries.append(Entry(n["sent_at"] or n["created_at"], "notification", f"{n['channel']} {n['event']} notification: {n['status']}",
                             [f"{n['attempts']} attempt(s)"] + ([n["last_error"]] if n["last_error"] else []), warn=n["status"] == "failed"))
    for e in events_of(pool, thread_id):
        if e["kind"] in ("thread_started", "http_refused") or e["kind"].startswith(("decision_", "retry", "fallback", "notification_")):
            continue  # shown above from their own records (or not about the thread's work)
        entries.append(Entry(e["at"], "audit", f"{e['kind']} by {e['actor']}", [f"{k}: {v}" for k, v in (e["detail"] or {}).items()][:6]))
    for t in sent["tickets"]:
        entries.append(Entry(t["created_at"], "effect", f"ticket #{t['id']} opened ({t['intent']}), now {t['status']}"))
    for o in sent["outbox"]:
        entries.append(Entry(o["created_at"], "effect", f"{o['kind']} sent to {o['recipient'] or 'the customer'}"))
    for p in sent["payments"]:
        entries.append(Entry(p["created_at"], "effect", f"payment {p['step']} {p['amount_cents'] / 100:.2f} {p['currency']} "
                             f"on order {p['order_id']}: {p['status']}", [x for x in (p["reference"], p["error"]) if x], warn=p["status"] == "failed"))
    for d in sent["documents"]:
        entries.append(Entry(d["published_at"], "effect", f"published {d['title']}", [d["path"]]))
    return sorted(entries, key=lambda e: e.at)


def drafts_of(runner: Any, thread_id: str, visits: list[dict[str, Any]], waiting: Optional[tuple[str, str, str, str]]) -> list[Draft]:
    """Each gate visit's content as the reviewer saw it, oldest first, with the change from
    the one before. `waiting`: (gate, visit, digest, content) of the visit still undecided."""
    from nodes.gates import content_digest

    drafts: list[Draft] = []
    previous: Optional[str] = None
    seen = set()
    for visit in visits:
        if visit["checkpoint_id"] in seen:
            continue
        seen.add(visit["checkpoint_id"])
        content = None
        try:
            snapshot = runner.graph.get_state({"configurable": {"thread_id": thread_id, "checkpoint_ns": "",
                                                                "checkpoint_id": visit["checkpoint_id"]}})
            if snapshot.values:
                content = runner.spec.review_content(dict(snapshot.values))
        except (KeyError, TypeError, ValueError):
            content = None  # a visit of an older state shape: its digest is still shown
        digest = content_digest(content) if content is not None else (visit["digest"] or "")
        drafts.append(Draft(visit["gate"], visit["checkpoint_id"], digest, content, visit,
                            diff_lines(previous, content) if previous is not None and content is not None else [], visit["stages"]))
        previous = content if content is not None else previous
    if waiting is not None and waiting[1] not in seen:
        gate, visit_id, digest, content = waiting
        drafts.append(Draft(gate, visit_id, digest, content, None, diff_lines(previous, content) if previous is not None else []))
    return drafts


def thread_history(pool: Any, runner: Any, review: Any) -> ThreadHistory:
    """Everything the thread page shows beyond the content under review. `review` is
    web.decide.load's view of the thread now."""
    thread_id = review.row.thread_id
    events = history.progress_of(pool, thread_id)
    visits = history.gate_visits(pool, thread_id)
    sent = history.side_effects(pool, thread_id)
    waiting = (review.gate, review.visit, review.digest, review.content) if review.gate else None
    chain = None
    if review.gate:
        from checkpoint.approval_chain import waiting as chain_waiting

        waits = chain_waiting(pool, [thread_id]).get(thread_id)
        if waits is not None:
            chain = {"text": waits.text, "lines": waits.chain.lines() if waits.chain else [],
                     "approved": history.stage_approvals_waiting(pool, thread_id, review.visit, review.digest) if review.visit else []}
    return ThreadHistory(step_rows(events, review.values), _timeline(pool, thread_id, events, visits, sent),
                         drafts_of(runner, thread_id, visits, waiting), sent, chain)
