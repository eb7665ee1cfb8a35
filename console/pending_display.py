"""`signoff pending`: what waits for sign-off, gathered and shown (a table for people, one JSON
document for scripts).

The listing itself is one indexed query (checkpoint/listing.py); added here are the approval
stage each thread waits at and, only for threads that began waiting before
migration 005 stored a digest, the digest read from their checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from rich.markup import escape

from console.display import age, safe_line
from console.review_display import stage_json
from console.terminal import emit, out


@dataclass(frozen=True)
class Waiting:
    """A page of waiting threads with the digest and the approval chain of each."""

    page: Any
    chains: dict[str, Any]
    digests: dict[str, str]


def waiting_threads(pool: Any, *, limit: int, graph: Optional[str], older_than: Optional[timedelta]) -> Waiting:
    from checkpoint import listing
    from checkpoint.approval_chain import waiting

    page = listing.waiting(pool, limit=limit, graph=graph, older_than=older_than)
    rows = page.rows
    # which stage waits for whom, worked out with the policy a decision would apply
    chains = waiting(pool, [row.thread_id for row in rows])
    # Threads that began waiting before migration 005 stored no digest: read theirs from
    # the checkpoint, as before (only those, so it costs nothing once they are decided).
    digests = {row.thread_id: row.digest for row in rows if row.digest is not None}
    legacy = [row for row in rows if row.digest is None]
    if legacy:
        digests.update(review_digests(pool, legacy))
    return Waiting(page, chains, digests)


def review_digests(pool: Any, rows: list[Any]) -> dict[str, str]:
    """The digest of what each waiting thread asks a reviewer to sign off (as `show` prints
    it, and as `approve --expect` checks it)."""
    from graphs.registry import get_spec
    from runtime.thread_runner import ThreadRunner
    from nodes.gates import content_digest

    runners: dict[str, Any] = {}
    digests = {}
    for row in rows:
        runner = runners.get(row.graph) or runners.setdefault(row.graph, ThreadRunner(pool, get_spec(row.graph)))
        digests[row.thread_id] = content_digest(runner.spec.review_content(runner.snapshot(row.thread_id).values))
    return digests


def print_pending(found: Waiting, *, limit: int, filtered: bool, as_json: bool) -> None:
    page, chains, digests = found.page, found.chains, found.digests
    rows = page.rows
    stages = {tid: w.text for tid, w in chains.items()}
    now = datetime.now(timezone.utc)
    if as_json:
        emit({"total": page.total, "limit": limit, "threads": [{
            "thread_id": row.thread_id, "graph": row.graph, "gate": row.gate, "waiting_since": row.updated_at,
            "age_seconds": max(0, int((now - row.updated_at).total_seconds())), "deadline": row.deadline,
            "overdue": bool(row.deadline and row.deadline <= now), "digest": digests[row.thread_id], "summary": row.summary,
            "waiting_for": stages.get(row.thread_id), "stage": stage_json(chains.get(row.thread_id), row.deadline),
        } for row in rows]})
        return
    if not rows:
        out.print("nothing is waiting for sign-off" + (" that matches" if filtered else ""))
        return
    # One line per thread, never wrapped or cut to the terminal's width: the id and the digest
    # are what a reviewer copies into `approve THREAD --expect DIGEST`. Every field that can
    # come from content is one safe line, so a message cannot forge a row.
    lines = [("thread", "graph", "gate", "age", "deadline", "digest", "summary")] + [
        (row.thread_id, row.graph, row.gate or "", age(now - row.updated_at),
         (f"{row.deadline:%Y-%m-%d %H:%M}" + (" overdue" if row.deadline <= now else "")) if row.deadline else "-",
         digests[row.thread_id], safe_line(row.summary, 70) + (f"  waits for {safe_line(stages[row.thread_id])}" if row.thread_id in stages else ""))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    for line in lines:
        out.print("  ".join(escape(cell.ljust(width)) for cell, width in zip(line, widths)) + "  " + line[6], soft_wrap=True)
    if page.total > len(rows):
        out.print(f"showing the oldest {len(rows)} of {page.total}: see more with --limit, or narrow with --graph / --older-than")
    if any(row.deadline and row.deadline <= now for row in rows):
        out.print("overdue gates get their default action from `signoff expire` (or a running worker)")
