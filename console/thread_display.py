"""`signoff show` and `signoff audit`: one thread as a person reads it (its state, the content
awaiting sign-off with its digest, its steps, decisions and failed notifications; its audit
trail one event a line), or as one JSON document for scripts.

`show` reads the threads row (stored when the thread reached its gate) and the latest
checkpoint's values through the checkpointer, without compiling a graph, so it answers at
once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from rich.markup import escape

from console.display import safe_line, token_counts
from console.review_display import print_review, print_stage, stage_json
from console.terminal import emit, out


@dataclass(frozen=True)
class ThreadView:
    row: Any
    values: dict[str, Any]
    #: the gate it waits at (None unless waiting), with the content and digest under review there
    gate: Optional[str]
    content: Optional[str]
    digest: Optional[str]
    decisions: list[dict[str, Any]]
    stage: Any
    failed_notifications: list[dict[str, Any]]


def read_thread(pool: Any, thread_id: str, *, notifications: bool = True) -> ThreadView:
    """What `show` shows; NotFound for no such thread."""
    from checkpoint import threads
    from checkpoint.approval_chain import waiting
    from checkpoint.database import make_saver
    from checkpoint.decisions import decisions_of
    from checkpoint.notifications import failed_for

    row = threads.get_existing(pool, thread_id)
    saved = make_saver(pool).get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    values = dict(saved.checkpoint.get("channel_values") or {}) if saved else {}
    gate = row.gate if row.status == "waiting" else None
    content, digest = row.review, row.digest
    if gate and digest is None:  # waiting since before migration 005: read it as before
        from runtime.session import existing_thread
        from nodes.gates import content_digest

        with existing_thread(thread_id, runnable=False) as runner:
            content = runner.spec.review_content(runner.snapshot(thread_id).values)
            digest = content_digest(content)
    decisions = decisions_of(pool, thread_id)
    stage = waiting(pool, [thread_id]).get(thread_id) if gate else None  # under the policy in force now
    failed = failed_for(pool, thread_id) if notifications else []
    return ThreadView(row, values, gate, content, digest, decisions, stage, failed)


def print_thread(thread_id: str, view: ThreadView, *, as_json: bool) -> None:
    row, values, gate, content, digest, stage = view.row, view.values, view.gate, view.content, view.digest, view.stage
    from observability.usage import call_cost, model_prices, step_json, totals

    calls = [call for call in values.get("calls") or [] if isinstance(call, dict)]
    prices = model_prices()
    if as_json:
        emit({
            "thread_id": thread_id, "graph": row.graph, "status": row.status, "gate": gate, "summary": row.summary,
            "deadline": row.deadline if gate else None, "digest": digest if gate else None, "review": content if gate else None,
            "error": values.get("error") or None, "created_at": row.created_at, "updated_at": row.updated_at,
            "steps": [step_json(call, prices) for call in calls], "tokens": totals(calls, prices),
            "decisions": [dict(d) for d in view.decisions], "stage": stage_json(stage, row.deadline),
        })
        return
    from rich.table import Table

    out.print(f"[bold]{thread_id}[/bold]  graph={row.graph}  status={row.status}" + (f"  gate={gate}" if gate else ""))
    out.print(f"summary: {safe_line(row.summary)}")
    if gate:
        out.print(f"deadline: {row.deadline:%Y-%m-%d %H:%M %Z}" if row.deadline else "deadline: -")
        print_review(content or "", digest or "")
        if stage:
            print_stage(stage, row.deadline)
    if values.get("error"):
        out.print(f"[yellow]error:[/yellow] {safe_line(values['error'])}")
    steps = Table("node", "model", "attempts", "latency", "tokens in/out", *(["cost"] if prices else []), "error", title="steps", box=None, pad_edge=False)
    for call in calls:
        tokens = token_counts(call) or "-"
        cost = [money(call_cost(call, prices))] if prices else []
        steps.add_row(safe_line(call.get("node") or "?"), safe_line(call.get("model") or "-"), safe_line(call.get("attempts")),
                      f"{safe_line(call.get('latency_ms'))}ms", tokens, *cost, safe_line(call.get("error") or ""))
    out.print(steps)
    if calls:
        total = totals(calls, prices)
        line = f"tokens: {total['input_tokens']} in, {total['output_tokens']} out"
        if prices:
            line += f", cost {money(total['cost'])}" + (f" ({total['unpriced_calls']} calls without a price or usage)" if total["unpriced_calls"] else "")
        out.print(line)
    for d in view.decisions:
        out.print(f"{d['decided_at']:%Y-%m-%d %H:%M:%S} {d['gate']}: {d['decision']} by {safe_line(d['actor'])}" + (f" - {safe_line(d['note'])}" if d["note"] else ""), soft_wrap=True)
    print_failed_notifications(view.failed_notifications)


def money(cost: Optional[float]) -> str:
    """A cost in the price table's currency: `-` when unknown, more digits when tiny."""
    if cost is None:
        return "-"
    return f"{cost:.6f}" if cost < 0.01 else f"{cost:.4f}"


def print_failed_notifications(failed: Sequence[dict[str, Any]]) -> None:
    """Notifications that gave up, so nobody assumes a reviewer was told."""
    for n in failed:
        out.print(f"[yellow]notification {n['channel']} ({n['event']}) failed after {n['attempts']} attempts:[/yellow] {safe_line(n['last_error'])}", soft_wrap=True)


def print_audit(thread_id: str, events: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        emit({"thread_id": thread_id, "events": [{"at": r["at"], "actor": r["actor"], "kind": r["kind"], "detail": r["detail"]} for r in events]})
        return
    # One line per event, never wrapped into a table's columns, so it greps and pipes cleanly;
    # the actor is one safe line and the detail JSON with every non-ASCII character escaped.
    actors = [safe_line(r["actor"]) for r in events]
    width = max([len(a) for a in actors] + [5])
    out.print(f"{'time':<19}  {'actor':<{width}}  {'event':<18}  detail", soft_wrap=True)
    for row, who in zip(events, actors):
        detail = escape(json.dumps(row["detail"], default=str, ensure_ascii=True))
        out.print(f"{row['at']:%Y-%m-%d %H:%M:%S}  {who:<{width}}  {safe_line(row['kind']):<18}  {detail}", soft_wrap=True)
