"""A reviewer's decision from the terminal: record it bound to the content they saw, then run
the thread on (`approve`, `reject`), or edit the reply and amount first (`approve --edit`).

The command line is checked in cli.py (--note, --expect without a terminal); what is here
needs the database: who acts (checkpoint/identity.py: the SIGNOFF_TOKEN owner, else the OS
login), the deadline deciding first, the digest, the approval chain.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from checkpoint.errors import EXIT_FAILED, InvalidInput
from console.display import safe_line
from console.review_display import print_review, print_stage_progress, print_waiting_stage
from runtime.running import run_on
from runtime.session import existing_thread
from console.terminal import fail, out


def refuse_if_expired(runner: Any, thread_id: str) -> None:
    """Apply the gate's default action if its deadline has passed; then the deadline decided
    before this person did, refused with the same one line as any earlier decider."""
    from runtime.thread_runner import expire_if_due
    from checkpoint.decisions import AlreadyDecided

    if expire_if_due(runner, thread_id, runner.context.clock(), lambda event: None) is not None:
        latest = runner.latest_decision(thread_id)
        raise AlreadyDecided(latest["actor"], latest["decided_at"], latest["decision"])  # type: ignore[index]


def decide_and_resume(thread_id: str, verdict: str, note: str, expect: Optional[str], *,
                      yes: bool = False, detach: bool = False, handover: bool = False, **question: Any) -> None:
    """Record a decision bound to the content the person saw, then run the thread on.

    An approval binds to a digest: the one given with --expect, or, at a terminal, the one of
    the content printed right here before the question (--yes skips the question, not the
    printing). Who decides is who runs the command (checkpoint/identity.py)."""
    from checkpoint.identity import cli_identity
    from nodes.gates import content_digest

    with existing_thread(thread_id) as runner:
        who = cli_identity(runner.pool)
        name = who.name
        if getattr(runner, "answers_interrupts", False):  # a graph that asks with interrupt(): runtime/answering.py
            from runtime.answering import answer_and_resume

            return answer_and_resume(runner, thread_id, verdict, name, note, expect, yes=yes, detach=detach,
                                     token_id=who.token_id, **question)
        if any(question.values()) or verdict == "answered":
            raise InvalidInput(f"thread {thread_id} runs {runner.spec.name}, whose gate asks no interrupt: "
                               "--interrupt, --args, --ignore and `answer` are for graphs that ask with interrupt()")
        refuse_if_expired(runner, thread_id)
        if verdict == "approved" and expect is None:
            snapshot = runner.snapshot(thread_id)
            if runner.gate_of(snapshot) is None:
                runner.decide(thread_id, verdict, actor=name, note=note, token_id=who.token_id)  # raises the one-line reason
            content = runner.spec.review_content(snapshot.values)
            expect = content_digest(content)
            print_review(content, expect)
            if not yes and not typer.confirm(f"approve this as {name}?", default=False):
                fail("not approved: nothing was recorded", EXIT_FAILED)
        progress = runner.decide(thread_id, verdict, actor=name, note=note, expect_digest=expect, handover=handover,  # type: ignore[arg-type]
                                 token_id=who.token_id)
        if progress is not None:  # one stage of an approval chain; the thread waits for the next
            print_stage_progress(thread_id, name, progress)
            return
        run_on(runner, thread_id, "handed over" if handover else verdict, name, detach=detach)  # a worker runs it on, or this terminal does


def edit_and_approve(thread_id: str, note: str, expect: Optional[str], *, detach: bool = False, **question: Any) -> None:
    """`approve --edit`: the reviewer edits the reply (and the amount) in $EDITOR.
    The same or a lower amount: they approve exactly what they saved (a new digest, both
    audited with the diff). A higher one is a proposal: nothing is approved, the chain starts
    over at the first stage the new amount needs, and the editor may not approve it.
    The file in the editor is what they reviewed, so no --expect is needed (given, it must
    match the content before the edit)."""
    from checkpoint.approval_chain import ensure_may_approve
    from checkpoint.identity import cli_identity
    from graphs.editing import apply_edit, check_raise, editable_text, parse_edit, run_editor
    from nodes.gates import content_digest

    with existing_thread(thread_id) as runner:
        who = cli_identity(runner.pool)
        name = who.name
        if getattr(runner, "answers_interrupts", False):  # the arguments of the action asked about, in $EDITOR
            from runtime.answering import answer_and_resume

            return answer_and_resume(runner, thread_id, "approved", name, note, expect, detach=detach, edit=True,
                                     token_id=who.token_id, **question)
        refuse_if_expired(runner, thread_id)  # the deadline decided first: nothing to edit
        snapshot = runner.snapshot(thread_id)
        gate = runner.gate_of(snapshot)
        if gate is None or snapshot.values.get("decision"):
            runner.decide(thread_id, "approved", actor=name, note=note, token_id=who.token_id)  # raises the one-line reason
        before = content_digest(runner.spec.review_content(snapshot.values))
        if expect is not None and expect != before:
            raise runner.digest_refusal(thread_id, before, expect)
        if "draft" not in snapshot.values:
            raise InvalidInput(f"--edit edits support replies; thread {thread_id} runs {runner.spec.name}: approve or reject it as it is")
        ensure_may_approve(runner.pool, runner.spec, thread_id, gate, runner._checkpoint_id(snapshot), before, snapshot.values, name,
                           who.token_id)
        edit = parse_edit(run_editor(editable_text(snapshot.values)), snapshot.values)
        check_raise(runner.pool, thread_id, snapshot.values, edit)
        digest = before
        unchanged = edit.draft == snapshot.values.get("draft") and edit.amount_cents in (None, (snapshot.values.get("refund") or {}).get("amount_cents"))
        if not unchanged:
            digest = apply_edit(runner, thread_id, edit, actor=name, expect_digest=before)
            out.print(f"edited [bold]{thread_id}[/bold]: digest {before} -> {digest}")
        if edit.restated:
            out.print("the reply stated the old amount, so it now states the new one", soft_wrap=True)
        if edit.raised:
            out.print(f"the amount went up, so this is a proposal, not an approval: no earlier approval counts for it, and "
                      f"{safe_line(name)}, who raised it, may not approve it", soft_wrap=True)
            print_waiting_stage(runner.pool, thread_id)
            return
        progress = runner.decide(thread_id, "approved", actor=name, note=note, expect_digest=digest, token_id=who.token_id)
        if progress is not None:
            print_stage_progress(thread_id, name, progress)
            return
        run_on(runner, thread_id, "approved", name, detach=detach)
