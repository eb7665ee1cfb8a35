"""Edit before approve (`signoff approve THREAD --edit`): the reviewer fixes the reply, and may
change the action's amount, in $EDITOR.

The edited content gets a new digest (it is new content, and a new gate visit), and the audit
keeps both digests and the diff (`content_edited`).

- Same or lower amount: what the editor saved is what they approve. A lower refund is covered
  by every approval a higher one had, so the stages already approved carry over to the edited
  content (by role; a stage the lower amount no longer needs drops out).
- Higher amount: a proposal, not an approval. Nobody approved the new amount, so no earlier
  stage approval counts for it; the chain starts over at the first stage the new amount
  needs (with that stage's own deadline from now), and the editor, who proposed it, may not
  approve it (nor a later lowering of it): like the requester, a proposer never signs off
  their own proposal. The amount may not exceed what is left to refund on the order.
"""

from __future__ import annotations

import difflib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoint.errors import Conflict, InvalidInput
from checkpoint.settings import MAX_INPUT_BYTES

HEADER = (
    "# Edit the reply below, save and close to approve it. Lines starting with '#' are ignored.\n"
    "# An empty reply approves nothing.\n"
)
AMOUNT_NOTE = ("# The amount: lowering it approves the lower amount; raising it only proposes it (every stage the\n"
               "# new amount needs must then approve it, and you may not).\n")
SEPARATOR = "--- reply ---"


class EditRefused(InvalidInput):
    pass


@dataclass(frozen=True)
class Edit:
    draft: str
    amount_cents: int | None  # None: the thread has no action
    raised: bool = False  # the amount went up: a proposal, not an approval
    restated: bool = False  # the reply still stated the old amount, so it now states the new one


def editable_text(values: dict[str, Any]) -> str:
    """The file the editor opens: the action's amount (if any) and the reply."""
    from nodes.orders import format_amount
    from nodes.refunds import proposed_action

    case = values.get("refund") or {}
    head = HEADER
    if proposed_action(values):
        head += AMOUNT_NOTE + f"amount: {format_amount(case['amount_cents'])} {case['currency']}\n"
    return f"{head}{SEPARATOR}\n{values.get('draft', '')}\n"


def parse_edit(text: str, values: dict[str, Any]) -> Edit:
    """What the reviewer saved, checked: a reply (one printable text, within the size limit) and,
    for an action, a positive amount in the same currency (check_raise bounds a higher one)."""
    from nodes.orders import parse_amount
    from nodes.refunds import proposed_action, unpaid_amounts

    if "\x00" in text:
        raise EditRefused("the edited text contains a NUL character: nothing was approved")
    head, sep, reply = text.partition(SEPARATOR)
    if not sep:
        raise EditRefused(f"the edited file lost its '{SEPARATOR}' line: nothing was approved")
    reply = "\n".join(line for line in reply.strip("\n").splitlines() if not line.startswith("#")).strip()
    if not reply:
        raise EditRefused("the edited reply is empty: nothing was approved")
    if len(reply.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise EditRefused(f"the edited reply is over {MAX_INPUT_BYTES} bytes: nothing was approved")
    case = values.get("refund") or {}
    if not proposed_action(values):
        if case and (promised := unpaid_amounts(reply, f"{values.get('draft', '')}\n{values.get('message', '')}")):
            raise EditRefused(f"the reply states {', '.join(promised)}, but no refund is proposed for this request: "
                              "take the amount out; nothing was approved")
        return Edit(reply, None)
    lines = [line.strip() for line in head.splitlines() if line.strip() and not line.startswith("#")]
    amounts = [line for line in lines if line.lower().startswith("amount:")]
    if len(amounts) != 1 or len(lines) != 1:
        raise EditRefused("keep exactly one 'amount: N CUR' line above the reply: nothing was approved")
    words = amounts[0].split(":", 1)[1].split()
    if not words or len(words) > 2 or (len(words) == 2 and words[1] != case["currency"]):
        raise EditRefused(f"write the amount as 'amount: N {case['currency']}' (the currency cannot change): nothing was approved")
    try:
        cents = parse_amount(words[0])
    except ValueError as exc:
        raise EditRefused(f"{exc}: nothing was approved") from None
    reply, restated = _restated(reply, case, cents)
    return Edit(reply, cents, raised=cents > case["amount_cents"], restated=restated)


def _restated(reply: str, case: dict[str, Any], cents: int) -> tuple[str, bool]:
    """The reply to go with the amount: where it still states the old amount (the reviewer
    changed only the amount line), it states the new one; then it must state that amount and
    no other, or the edit is refused (the customer is told the refund that is made)."""
    from decimal import Decimal

    from nodes.amounts import replace_amount
    from nodes.orders import format_amount
    from nodes.refunds import amount_problem

    restated = reply
    if cents != case["amount_cents"]:
        restated = replace_amount(reply, Decimal(case["amount_cents"]) / 100, format_amount(cents), case["currency"])
    if problem := amount_problem(restated, cents, case["currency"]):
        raise EditRefused(f"{problem}: make the reply state the amount refunded; nothing was approved")
    return restated, restated != reply


def check_raise(pool: Any, thread_id: str, values: dict[str, Any], edit: Edit) -> None:
    """A raised amount stays within what is left to refund on the order (paid, less what other
    threads refunded): the eligibility check the proposal passed, applied to the new amount."""
    from nodes.orders import format_amount, get_order
    from nodes.refunds import refunded_cents

    if not edit.raised or edit.amount_cents is None:
        return
    case = values["refund"]
    order = get_order(pool, case["order_id"])
    if order is None:
        raise EditRefused(f"order {case['order_id']} is no longer in the orders (signoff orders list), so no higher amount can be "
                          "checked against it: nothing was changed")
    left = order.amount_cents - refunded_cents(pool, order.order_id, thread_id)
    if edit.amount_cents > left:
        raise EditRefused(f"{format_amount(edit.amount_cents)} {case['currency']} is more than the {format_amount(max(left, 0))} "
                          f"{case['currency']} left to refund on order {case['order_id']}: nothing was changed")


def run_editor(text: str) -> str:
    """`text` after $VISUAL / $EDITOR (default vi) edited it in a private temporary file."""
    editor = (os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi").strip()
    try:
        command = shlex.split(editor)
    except ValueError:
        raise InvalidInput(f"$EDITOR {editor!r} cannot be parsed: set it to a command, e.g. EDITOR=nano") from None
    with tempfile.TemporaryDirectory(prefix="signoff-edit-") as folder:
        path = Path(folder) / "reply.txt"
        path.write_text(text, encoding="utf-8")
        try:
            code = subprocess.run([*command, str(path)], check=False).returncode
        except OSError as exc:
            raise InvalidInput(f"cannot run the editor {command[0]!r} ({exc.strerror or exc}): set EDITOR to one you have") from None
        if code != 0:
            raise Conflict(f"the editor exited with code {code}: nothing was approved")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise EditRefused("the edited file is not UTF-8 text: nothing was approved") from None


def diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=1)
    return "\n".join(lines)[:4000]


def apply_edit(runner: Any, thread_id: str, edit: Edit, *, actor: str, expect_digest: str) -> str:
    """Write the edited content into the thread (a new gate visit), carry over the stages
    already approved (not for a raised amount, which starts its chain over), audit both digests
    and the diff; the new digest. Under the thread's row lock, and only if the content is still
    the one the reviewer edited."""
    from datetime import datetime, timedelta, timezone

    from checkpoint import threads
    from checkpoint.approval_chain import describe
    from checkpoint.database import HeldConnection
    from checkpoint.audit import record_event_on
    from runtime.thread_runner import DigestMismatch, NotAtGate, config_for
    from nodes.gates import content_digest

    # Under the row lock everything runs on the lock's connection, the checkpoint reads and
    # the edit's write included: a held connection never waits for a second from the pool.
    with threads.locked(runner.pool, thread_id) as conn, runner._writing_through(HeldConnection(conn)):
        held = HeldConnection(conn)
        snapshot = runner.snapshot(thread_id)
        gate = runner.gate_of(snapshot)
        if gate is None or snapshot.values.get("decision"):
            raise NotAtGate(f"thread {thread_id} is not waiting at a gate: see `signoff show {thread_id}`")
        before = runner.spec.review_content(snapshot.values)
        if content_digest(before) != expect_digest:
            raise DigestMismatch(f"the content changed while you edited it (digest {content_digest(before)}): nothing was approved; "
                                 f"run `signoff show {thread_id}` again")
        old_visit = runner._checkpoint_id(snapshot)
        old_chain = describe(held, runner.spec, thread_id, old_visit, expect_digest, dict(snapshot.values), gate)
        update: dict[str, Any] = {"draft": edit.draft, "flags": []}  # the reviewer wrote this text: no model flag holds for it
        if edit.amount_cents is not None:
            update["refund"] = {**snapshot.values["refund"], "amount_cents": edit.amount_cents}
        runner.graph.update_state(config_for(thread_id), update)
        edited = runner.snapshot(thread_id)
        after = runner.spec.review_content(edited.values)
        new_digest = content_digest(after)
        new_visit = runner._checkpoint_id(edited)
        barred = list(old_chain.barred) if old_chain else []  # a proposer stays one through later edits
        given = [a for v in old_chain.stages for a in v.approvers] if old_chain else []
        if edit.raised:
            carried: list[str] = []
            barred = list(dict.fromkeys([*barred, actor]))
            chain = describe(held, runner.spec, thread_id, new_visit, new_digest, dict(edited.values), gate)
            # The chain starts over: its first stage begins to wait now, with its own deadline.
            first = chain.current.stage.deadline_hours if chain and chain.current else None
            row = threads.get(held, thread_id)  # type: ignore[arg-type]
            hours = first or (row.deadline_hours if row else runner.spec.deadline_hours)
            now = runner.context.clock() if runner.context else datetime.now(timezone.utc)
            conn.execute("UPDATE threads SET deadline = %s, updated_at = now() WHERE thread_id = %s",
                         (now + timedelta(hours=hours), thread_id))
        else:
            carried = _carry_over(conn, thread_id, old_visit, expect_digest, new_visit, new_digest)
        record_event_on(conn, thread_id, actor, "content_edited", {
            "gate": gate, "before_digest": expect_digest, "after_digest": new_digest, "visit": new_visit, "diff": diff(before, after),
            "amount_before": (snapshot.values.get("refund") or {}).get("amount_cents") if edit.amount_cents is not None else None,
            "amount_after": edit.amount_cents, "raised": edit.raised, "approvals_carried_over": carried,
            "approvals_voided": [a for a in given if a not in carried], "may_not_approve": barred})
    runner.settle(thread_id)  # the stored digest and content under review, the chain it waits for (pending, show)
    return new_digest


def _carry_over(conn: Any, thread_id: str, old_visit: str, old_digest: str, new_visit: str, new_digest: str) -> list[str]:
    """Stage approvals of the edited content count for the new content (by role)."""
    rows = conn.execute(
        "INSERT INTO stage_approvals (thread_id, gate, checkpoint_id, digest, stage, role, actor, note, token_id) "
        "SELECT thread_id, gate, %s, %s, stage, role, actor, 'carried over from ' || digest, token_id FROM stage_approvals "
        "WHERE thread_id = %s AND checkpoint_id = %s AND digest = %s RETURNING actor",
        (new_visit, new_digest, thread_id, old_visit, old_digest),
    ).fetchall()
    return [r["actor"] for r in rows]
