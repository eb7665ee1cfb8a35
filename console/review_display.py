"""How what waits for sign-off is shown to a person: the content under review with the digest
an approval binds to, and which stage of its approval chain waits for whom.

Shared by `show`, `pending`, `start` and the decision flows (runtime/deciding.py), so the
content a reviewer approves and the stage they are told about read the same everywhere.
"""

from __future__ import annotations

from typing import Any

from console.display import safe, safe_line
from console.terminal import out


def print_review(content: str, digest: str) -> None:
    """The content a reviewer signs off, exactly as approve binds it, rendered safely."""
    out.print(f"\n[bold]awaiting sign-off[/bold] (digest {digest}):\n{safe(content)}\n")


def print_stage_progress(thread_id: str, name: str, progress: Any) -> None:
    stage = progress.approved_stage
    if progress.again:
        out.print(f"{safe_line(name)} already approved this content of [bold]{thread_id}[/bold]; nothing new recorded")
    elif stage is not None:
        out.print(f"approved stage {stage.index}/{len(progress.chain.stages)} ({safe_line(stage.stage.name)}) of "
                  f"[bold]{thread_id}[/bold] by {safe_line(name)}")
    out.print(f"waiting for {safe_line(progress.chain.waiting_for())}", soft_wrap=True)


def print_waiting_stage(pool: Any, thread_id: str) -> None:
    """Which stage of an approval chain a waiting thread needs."""
    from checkpoint import threads
    from checkpoint.approval_chain import waiting

    waits = waiting(pool, [thread_id]).get(thread_id)
    if waits:
        row = threads.get(pool, thread_id)
        print_stage(waits, row.deadline if row else None)


def print_stage(waits: Any, deadline: Any) -> None:
    """`approval needed: stage 2/2 finance (2 of carol, dave, erin), until ...` and who may not approve."""
    until = f", until {deadline:%Y-%m-%d %H:%M %Z} (then the gate's default action)" if deadline else ""
    out.print(f"approval needed: {safe_line(waits.text)}{until}", soft_wrap=True)
    for line in (waits.chain.lines()[len(waits.chain.stages):] if waits.chain else []):
        out.print(f"  {safe_line(line)}", soft_wrap=True)


def stage_json(waits: Any, deadline: Any) -> Any:
    """The waiting stage for --json (docs/json-output.md), or None."""
    return waits.chain.as_json(deadline) if waits is not None and waits.chain is not None else None
