"""A reviewer's decision on a thread of any LangGraph graph, from the terminal: approve
(accept/approve), approve with edited arguments, reject with feedback (response/reject),
reject --ignore, or a free answer (`signoff answer`), each on one question, by interrupt id
when several wait, bound to the digest of what was shown; then the thread runs on.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from checkpoint.errors import EXIT_FAILED, InvalidInput


def answer_and_resume(runner: Any, thread_id: str, verdict: str, name: str, note: str, expect: Optional[str], *,
                      yes: bool = False, detach: bool = False, interrupt_id: Optional[str] = None, edit_args: Any = None,
                      edit: bool = False, ignore: bool = False, value: Any = None,
                      token_id: Optional[int] = None) -> None:
    from runtime.deciding import refuse_if_expired
    from console.review_display import print_review
    from runtime.running import run_on
    from console.terminal import fail

    refuse_if_expired(runner, thread_id)
    feedback = note if verdict == "rejected" else None
    if edit and edit_args is None:
        if expect is None:  # what the editor shows is what they reviewed
            expect = runner.waiting_on(thread_id)[2]
        edit_args = args_in_editor(runner, thread_id, interrupt_id)
    if edit_args is not None:
        edit_args = args_object(edit_args)
    if verdict == "approved" and expect is None:  # at a terminal: what is approved is what is shown here
        snapshot, open_, digest = runner.waiting_on(thread_id)
        from runtime.interrupts import review_text

        print_review(review_text(open_), digest)
        expect = digest
        if not yes and not typer.confirm(f"approve this as {name}?", default=False):
            fail("not approved: nothing was recorded", EXIT_FAILED)
    progress = runner.decide(thread_id, verdict, actor=name, note=note, expect_digest=expect, interrupt_id=interrupt_id,
                             feedback=feedback, edit_args=edit_args, ignore=ignore, value=value, token_id=token_id)
    if progress is not None:  # one stage of an approval chain; the thread waits for the next
        from console.review_display import print_stage_progress

        print_stage_progress(thread_id, name, progress)
        return
    run_on(runner, thread_id, {"answered": "answered", "approved": "approved"}.get(verdict, "rejected"), name, detach=detach)


def args_object(given: Any) -> dict[str, Any]:
    """Edited arguments: a JSON object (text from --args, or what the editor saved)."""
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"the edited arguments are not JSON ({exc.msg} at column {exc.colno}): pass a JSON object") from None
    if not isinstance(given, dict):
        raise InvalidInput("the edited arguments must be a JSON object, like '{\"amount\": 10}'")
    return given


def args_in_editor(runner: Any, thread_id: str, interrupt_id: Optional[str]) -> str:
    """The arguments of the action asked about, edited in $EDITOR."""
    from graphs.editing import run_editor
    from runtime.runner import choose

    _, open_, _ = runner.waiting_on(thread_id)
    target = choose(open_, interrupt_id, thread_id)
    actions = target.actions()
    if len(actions) != 1:
        raise InvalidInput(f"interrupt {target.id} has {len(actions)} actions to edit: --edit edits the arguments of one action")
    return run_editor(json.dumps(actions[0]["args"], indent=2, ensure_ascii=False, default=str) + "\n")
