"""The refund path of the support graph: what the customer asks back and whether they may have it.

extract_refund (structured output) -> check_refund (identity, then the refund policy from the
knowledge base) -> propose_refund (eligible: the action plus the confirmation to send) |
explain_refund (not: a reply saying why, and no action). Both stop at the review gate, where
the action and the reply are signed off under one digest (`review_content`).

Nothing here moves money: the saga after the last approval does (nodes/refund_saga.py).
Model output is untrusted: an order number or amount the model names is used only if it
appears in the customer's own message, so a hallucinated order is never refunded.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from nodes.amounts import in_currency, money_mentions, refundable_cents, same_amount, written_numbers
from nodes.context import SignoffContext
from nodes.orders import ORDER_ID, Order, format_amount, get_order, orders_loaded
from nodes.resilient import ResilientAgentNode

#: A message asking for money back. A cheap pre-filter, so the other messages pay no extra
#: model call; the structured extraction then names the order and the amount.
REFUND_WORDS = re.compile(r"\b(refund\w*|money back|reimburs\w*|charge ?back|repay\w*|pay me back)\b", re.IGNORECASE)
#: "order 1042", "order #1042", "#1042": the deterministic reading, used when the model's is not in the message.
ORDER_MENTION = re.compile(r"(?:\border\b\s*(?:number|no\.?|id)?\s*[:#]?\s*|#)(?=[A-Za-z._-]*\d)([A-Za-z0-9][A-Za-z0-9._-]{0,39})\b", re.IGNORECASE)
POLICY_SLUG = "billing-refund-policy"
DEFAULT_WINDOW_DAYS = 14
#: "within **14 days**" in the policy article (nodes/data/kb/billing-refund-policy.md)
WINDOW_IN_POLICY = re.compile(r"within\s+\**\s*(\d{1,3})\s+days", re.IGNORECASE)

Reason = Literal["eligible", "no_order", "not_found", "identity", "cancelled", "already_refunded", "window", "exceeds_paid",
                 "unchecked", "no_sender", "bad_amount"]


class RefundCase(TypedDict, total=False):
    """One refund request as it moves through the path and the saga (state key `refund`)."""

    order_id: str | None
    requested_cents: int | None  # what the customer asked back; None: the whole order
    unrefundable: str  # what the customer asked back, as written, when no refund can be of it ("$0")
    amount_cents: int  # what is proposed (and, once approved, refunded)
    currency: str
    reason: Reason
    window_days: int
    # the saga's results (nodes/refund_saga.py)
    credit_note: str
    refund_ref: str
    failure: str
    void_ref: str
    void_failure: str
    status: Literal["proposed", "declined", "refunded", "failed"]


class RefundRequest(BaseModel):
    """What the customer asks back."""

    order_id: str = Field(default="", description="the order number the customer names, exactly as written; empty if none")
    amount: float | None = Field(default=None, description="the amount of money asked back, if the customer names one; null for the whole order")


def wants_refund(message: str) -> bool:
    return bool(REFUND_WORDS.search(message or ""))


# --- extract ---------------------------------------------------------------------------------

EXTRACT_PROMPT = (
    "Extract the refund request from the customer message: the order number they name and the "
    "amount they ask back (null if they name none). Answer in JSON.\n"
    'Message: "Refund order 2231 please, 20 dollars" -> {"order_id": "2231", "amount": 20}\n'
    'Message: "I want my money back for #A-17" -> {"order_id": "A-17", "amount": null}'
)


def extract_prompt(state: dict[str, Any]) -> list[Any]:
    return [SystemMessage(EXTRACT_PROMPT), HumanMessage(f'Message: "{state["message"]}" ->')]


def _tokens(message: str) -> set[str]:
    return {t.lower() for t in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", message)}


#: numbers that are a quantity, not an order: "5 days ago", "$60", "12 seats", "3x"
QUANTITY = re.compile(
    r"[$€£]\s*(\d[\d,.]*)|\b(\d[\d,.]*)\s*(?:%|x\b|(?:seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|"
    r"seats?|users?|people|persons?|members?|notes?|notebooks?|devices?|times?|dollars?|euros?|pounds?|usd|eur|gbp|cents?)\b)",
    re.IGNORECASE,
)


def read_order_id(message: str, proposed: str | None) -> str | None:
    """The model's order id if the message names it other than as a quantity (a small model
    reads "paid 5 days ago" as order 5), else the first order the message mentions."""
    candidate = (proposed or "").strip().lstrip("#").strip()
    quantities = {n for match in QUANTITY.finditer(message) for n in match.groups() if n}
    mentioned = {m.lower() for m in ORDER_MENTION.findall(message)}
    if candidate and ORDER_ID.fullmatch(candidate) and candidate.lower() in _tokens(message) \
            and (candidate not in quantities or candidate.lower() in mentioned):
        return candidate
    match = ORDER_MENTION.search(message)
    return match.group(1) if match else None


def read_amount(message: str, proposed: float | None, order_id: str | None = None) -> tuple[int | None, str | None]:
    """What the customer asks back: (cents, None); (None, None) for the whole order when they
    name no amount; or (None, what they asked) when that cannot be refunded (zero, negative,
    not a number, finer than a cent, beyond any order): the reviewer is told, and it is never
    read as the whole order.

    The model's number counts only if the message writes it (an amount the customer never
    wrote is never proposed), and it is checked as written, not as the model's float. When
    the model gives none, an amount of money the message writes once ("$20") is the one."""
    money = money_mentions(message)
    bad = next((m.text for m in money if refundable_cents(m.value) is None), None)
    if bad is not None:
        return None, bad
    if proposed is not None:
        try:
            value = Decimal(str(proposed))
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0:
            return None, str(proposed)
        order = {order_id} if order_id else set()
        written = [n for n in written_numbers(message) if n.text.lstrip("-−") not in order]
        match = next((n for n in written if same_amount(abs(n.value), value)), None)
        if match is not None:
            cents = refundable_cents(match.value)
            return (cents, None) if cents is not None else (None, match.text)
    amounts = list(dict.fromkeys(m.value for m in money))
    return (refundable_cents(amounts[0]), None) if len(amounts) == 1 else (None, None)


def _extracted(state: dict[str, Any], request: RefundRequest | None) -> dict[str, Any]:
    message = state["message"]
    order_id = read_order_id(message, request.order_id if request else None)
    cents, unrefundable = read_amount(message, request.amount if request else None, order_id)
    case = RefundCase(order_id=order_id, requested_cents=cents)
    return {"intent": "billing", "refund": {**case, "unrefundable": unrefundable} if unrefundable else case}


extract_refund = ResilientAgentNode(
    "extract_refund",
    extract_prompt,
    lambda state, result: _extracted(state, result.parsed),  # type: ignore[arg-type]
    schema=RefundRequest,
    # The model failed: the message's own order mention still lets a reviewer see a proposal.
    on_failure=lambda state, result: _extracted(state, None),
)


# --- check -----------------------------------------------------------------------------------


def refund_window_days(pool: ConnectionPool) -> int:
    """The refund window the knowledge base's policy article states, else 14 days."""
    from nodes.knowledge import ensure_loaded

    ensure_loaded(pool)
    with pool.connection() as conn:
        row = conn.execute("SELECT body FROM kb_articles WHERE slug = %s", (POLICY_SLUG,)).fetchone()
    match = WINDOW_IN_POLICY.search(row["body"]) if row else None
    return int(match.group(1)) if match else DEFAULT_WINDOW_DAYS


def refunded_cents(pool: ConnectionPool, order_id: str, thread_id: str) -> int:
    """What other threads already refunded on this order."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT coalesce(sum(amount_cents), 0) AS cents FROM payment_operations "
            "WHERE order_id = %s AND step = 'refund' AND status = 'done' AND thread_id <> %s",
            (order_id, thread_id),
        ).fetchone()
    return int(row["cents"])


def assess(order: Order | None, case: RefundCase, email: str | None, now: datetime, window_days: int, refunded: int,
           *, loaded: bool = True) -> RefundCase:
    """The refund policy, as a pure function of the facts: identity first (nothing about an
    order is told to someone who does not own it), then status, window and amount. A check
    that had nothing to check against (no orders loaded: `loaded`; no sender address) is
    not a finding about the customer's order: it has a reason of its own, which the reply
    does not pretend was a failed lookup and the reviewer is told about."""
    result: dict[str, Any] = {**case, "window_days": window_days}

    def decided(reason: Reason, **more: Any) -> RefundCase:
        return RefundCase(**{**result, **more, "reason": reason, "status": "proposed" if reason == "eligible" else "declined"})  # type: ignore[typeddict-item]

    if not case.get("order_id"):
        return decided("no_order")
    if order is None and not loaded:
        return decided("unchecked")
    if not email or not email.strip():
        return decided("no_sender")
    if order is None:
        return decided("not_found")
    if email.strip().lower() != order.email.lower():
        return decided("identity")
    result["currency"] = order.currency
    if order.status == "cancelled":
        return decided("cancelled")
    if order.status == "refunded" or refunded >= order.amount_cents:
        return decided("already_refunded")
    if now - order.ordered_at > timedelta(days=window_days):
        return decided("window")
    left = order.amount_cents - refunded
    requested = case.get("requested_cents")
    if case.get("unrefundable") or (requested is not None and requested <= 0):
        return decided("bad_amount")
    wanted = left if requested is None else requested
    if wanted > left:
        return decided("exceeds_paid", amount_cents=wanted)
    return decided("eligible", amount_cents=wanted)


def check_refund(state: dict[str, Any], runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    from nodes.tools import current_thread_id

    pool = runtime.context.pool
    case = RefundCase(**(state.get("refund") or {}))
    order = get_order(pool, case["order_id"]) if case.get("order_id") else None
    refunded = refunded_cents(pool, order.order_id, current_thread_id()) if order else 0
    loaded = order is not None or not case.get("order_id") or orders_loaded(pool)
    assessed = assess(order, case, state.get("email"), runtime.context.clock(), refund_window_days(pool), refunded, loaded=loaded)
    return {"refund": assessed, "sources": [POLICY_SLUG]}


# --- propose / explain -----------------------------------------------------------------------


def money(case: RefundCase) -> str:
    return f"{format_amount(case['amount_cents'])} {case['currency']}"


def propose_refund(state: dict[str, Any]) -> dict[str, Any]:
    """The confirmation the customer gets once the refund is made. A template, not model text:
    a reply about money must state exactly the amount that is approved and paid."""
    case = state["refund"]
    draft = (
        f"We have refunded {money(case)} for order {case['order_id']}. The money goes back to your original "
        "payment method and takes 5-10 business days to appear."
    )
    return {"draft": draft}


def explain_refund(state: dict[str, Any]) -> dict[str, Any]:
    """Why no refund is proposed, told without revealing anything about an order the sender
    has not proven to own."""
    case = state.get("refund") or {}
    order_id, days = case.get("order_id"), case.get("window_days", DEFAULT_WINDOW_DAYS)
    unknown = (f"I could not find an order {order_id} placed with the email address you wrote from. Please check the "
               "order number, or write to us from the address you used for the order.")
    reasons = {
        "no_order": "I could not find an order number in your message. Please reply with the order number so we can look at your refund.",
        # One answer for an unknown order and someone else's: which order numbers exist is not told.
        "not_found": unknown,
        "identity": unknown,
        "cancelled": f"Order {order_id} was cancelled, so no payment was taken for it and there is nothing to refund.",
        "already_refunded": f"Order {order_id} has already been refunded. Refunds take 5-10 business days to appear on your statement.",
        "window": f"Order {order_id} was placed more than {days} days ago, which is outside our {days}-day refund window. "
                  "Your plan stays active until the end of the period you paid for.",
        "exceeds_paid": f"The amount you asked for is more than what is left to refund on order {order_id}. Please check the amount and reply.",
        # Nothing was looked up: the reply claims no finding, and the reviewer is told (case_checks).
        "unchecked": f"Thank you for your refund request for order {order_id}. A team member will look at your order and reply to you personally.",
        "no_sender": f"To look at a refund for order {order_id}, we need to know that the order is yours. Please write to us from the "
                     "email address you used for the order.",
        "bad_amount": f"The amount in your message is not one we can refund. Please reply with the amount you would like back for "
                      f"order {order_id}, or tell us if you would like the whole order refunded.",
    }
    return {"draft": reasons.get(case.get("reason", "no_order"), reasons["no_order"])}


# --- what the gate shows ----------------------------------------------------------------------


def proposed_action(values: dict[str, Any]) -> str | None:
    """`refund(1042, 149.00, USD)` when the thread proposes a refund, else None."""
    case = values.get("refund") or {}
    if case.get("reason") != "eligible":
        return None
    return f"refund({case['order_id']}, {format_amount(case['amount_cents'])}, {case['currency']})"


def case_checks(case: RefundCase) -> list[str]:
    """What the reviewer must know about a request no refund is proposed for because a check
    had nothing to go on, or the amount asked cannot be refunded."""
    order_id, reason = case.get("order_id"), case.get("reason")
    if reason == "unchecked":
        return [f"no orders are loaded, so order {order_id} was not looked up and no refund is proposed: load them "
                "(signoff orders load FILE) and send the request again, or send this reply"]
    if reason == "no_sender":
        return [f"the message has no sender address, so whether order {order_id} is theirs was not checked and no refund is proposed"]
    if reason == "bad_amount":
        asked = case.get("unrefundable") or format_amount(case.get("requested_cents") or 0)
        return [f"the customer asked for {asked}, which no refund can be (zero, negative, not a number or too large): "
                "no refund is proposed"]
    return []


def amount_problem(reply: str, amount_cents: int, currency: str) -> str | None:
    """Why `reply` does not tell the customer the refund that is made, or None: it must state
    the amount, and no other amount of money (a reply never promises money that is not paid)."""
    want = Decimal(amount_cents) / 100
    stated = money_mentions(reply, currency)
    other = [m.text for m in stated if m.value != want or not in_currency(m.text, currency)]
    refund = f"{format_amount(amount_cents)} {currency}"
    if other:
        return f"the reply states {', '.join(dict.fromkeys(other))}, but the refund is {refund}"
    if not stated:
        return f"the reply does not state the amount refunded ({refund})"
    return None


def unpaid_amounts(reply: str, known: str) -> list[str]:
    """The amounts of money `reply` states that `known` (the customer's message, the reply as
    drafted) does not: on a request no refund is proposed for, each would promise money that
    is not paid."""
    written = {abs(n.value) for n in written_numbers(known)}
    return list(dict.fromkeys(m.text for m in money_mentions(reply) if abs(m.value) not in written))


def amount_checks(values: dict[str, Any]) -> list[str]:
    """The reply's amounts against the action's, for the gate (see `amount_problem`)."""
    if not proposed_action(values):
        return []
    case = values["refund"]
    problem = amount_problem(values.get("draft", ""), case["amount_cents"], case["currency"])
    return [f"{problem}: edit them to agree (approve --edit) or reject"] if problem else []


def review_content(values: dict[str, Any]) -> str:
    """What a reviewer signs off: the action (if any) and the reply, under one digest, so an
    `approve --expect` binds to both; a reply with no action is the reply alone. What the
    reviewer must know about them comes first, one `check:` line each, under the same digest:
    a refund nothing was checked for, a reply whose amount is not the action's, a redraft that
    is the rejected reply again (`flags`, set by the node that drafted it)."""
    action = proposed_action(values)
    draft = values.get("draft", "")
    checks = [*case_checks(values.get("refund") or {}), *amount_checks(values), *(values.get("flags") or [])]
    head = "".join(f"check: {check}\n" for check in checks)
    if action:
        return f"{head}action: {action}\nreply:\n{draft}"
    return f"{head}reply:\n{draft}" if head else draft


def route_after_check(state: dict[str, Any]) -> Literal["propose_refund", "explain_refund"]:
    return "propose_refund" if (state.get("refund") or {}).get("reason") == "eligible" else "explain_refund"


def action_tag(values: dict[str, Any]) -> str:
    """` refund(1042, 149.00, USD)` for a one-line summary, else nothing."""
    action = proposed_action(values)
    return f" {action}" if action else ""


def saga_outcome(values: dict[str, Any]) -> str:
    """How the saga ended, for the thread's outcome line."""
    case = values.get("refund") or {}
    if case.get("status") == "refunded":
        return f", refunded {money(case)} on order {case['order_id']} ({case.get('refund_ref', '')})"
    if case.get("status") == "failed":
        undone = ", credit note voided" if case.get("void_ref") else (", credit note NOT voided" if case.get("credit_note") else "")
        return f", refund failed ({case.get('failure', '')}){undone}"
    return ""


def action_amount(values: dict[str, Any]) -> int | None:
    """The amount of the refund under review (its approval chain depends on it), else None."""
    return (values.get("refund") or {}).get("amount_cents") if proposed_action(values) else None


def action_currency(values: dict[str, Any]) -> str | None:
    """The currency of that amount (the policy's thresholds are in one currency)."""
    return (values.get("refund") or {}).get("currency") if proposed_action(values) else None
