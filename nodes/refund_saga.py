"""The refund saga, run only after the last approval: place a credit note, issue the refund at
the payment provider, then the confirmation goes out (the support graph's reply node). If the
refund is refused for good, the done steps are compensated in reverse order (void the credit
note) and a holding reply goes out instead, with the ticket left open.

Exactly once, whatever kills the process when: every step calls the payments port with a key
made of the thread and the step, so a repeated call returns what the first did (also after a
provider timeout that followed its commit); and the step's outcome is recorded in
`payment_operations` under that key together with its audit event, so a step that already
recorded its outcome is never called again, and each outcome is audited once.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from langgraph.runtime import Runtime
from psycopg_pool import ConnectionPool

from checkpoint.database import HeldConnection
from nodes.context import SignoffContext
from nodes.payments import PaymentDeclined, PaymentsPort, payments_from_env
from nodes.refunds import RefundCase
from nodes.tools import current_thread_id, record_event_on

#: audit event kind per (step, outcome)
EVENTS = {
    ("credit_note", "done"): "saga_credit_note",
    ("credit_note", "failed"): "saga_credit_note_failed",
    ("refund", "done"): "saga_refund",
    ("refund", "failed"): "saga_refund_failed",
    ("void_credit_note", "done"): "saga_compensated_void",
    ("void_credit_note", "failed"): "saga_compensation_failed",
}


def idempotency_key(thread_id: str, step: str) -> str:
    return f"signoff:{thread_id}:{step}"


def payments_for(context: SignoffContext, pool: Any = None) -> PaymentsPort:
    """The context's port (tests), else the one the environment configures (the ledger on
    `pool`, the context's unless given)."""
    return getattr(context, "payments", None) or payments_from_env(pool or context.pool)


def run_step(pool: ConnectionPool, port: PaymentsPort, thread_id: str, step: str, case: RefundCase,
             call: Callable[[str], str]) -> dict[str, Any]:
    """Do one saga step once and return its recorded outcome (`status`, `reference`, `error`).

    A PaymentUnavailable (the provider kept failing) is raised: nothing is recorded, and the
    step runs again, with the same key, when the thread is resumed."""
    key = idempotency_key(thread_id, step)
    with pool.connection() as conn:
        recorded = conn.execute("SELECT * FROM payment_operations WHERE idempotency_key = %s", (key,)).fetchone()
    if recorded is not None:
        return recorded
    try:
        reference, status, error = call(key), "done", ""
    except PaymentDeclined as exc:
        reference, status, error = "", "failed", str(exc)[:300]
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO payment_operations (idempotency_key, thread_id, step, order_id, amount_cents, currency, status, reference, error) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
            (key, thread_id, step, case["order_id"], case["amount_cents"], case["currency"], status, reference, error),
        ).fetchone()
        if row is None:  # recorded meanwhile by a run that got there first: theirs stands
            return conn.execute("SELECT * FROM payment_operations WHERE idempotency_key = %s", (key,)).fetchone()
        detail = {"key": key, "adapter": port.name, "order_id": case["order_id"], "amount_cents": case["amount_cents"],
                  "currency": case["currency"], "reference": reference}
        if error:
            detail["error"] = error
        record_event_on(conn, thread_id, "signoff", EVENTS[(step, status)], detail)
    return row


def _step(step: str, call: Callable[[PaymentsPort, RefundCase, str], str],
          done: Callable[[RefundCase, dict[str, Any]], dict[str, Any]],
          failed: Callable[[RefundCase, dict[str, Any]], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def on(pool: Any, state: dict[str, Any], context: SignoffContext) -> dict[str, Any]:
        case: RefundCase = state["refund"]
        port = payments_for(context, pool)
        row = run_step(pool, port, current_thread_id(), step, case, lambda key: call(port, case, key))
        update = done(case, row) if row["status"] == "done" else failed(case, row)
        return {"refund": {**case, **update}}

    def node(state: dict[str, Any], runtime: Runtime[SignoffContext]) -> dict[str, Any]:
        return on(runtime.context.pool, state, runtime.context)

    node.__name__ = step
    node.on = on  # type: ignore[attr-defined]  # the step on a connection the caller holds
    return node


_place_credit_note = _step(
    "credit_note",
    lambda port, case, key: port.place_credit_note(key, case["order_id"], case["amount_cents"], case["currency"]),  # type: ignore[arg-type]
    lambda case, row: {"credit_note": row["reference"]},
    lambda case, row: {"status": "failed", "failure": row["error"]},
)
#: First key of the transaction advisory lock that serialises the sagas of one order.
_ORDER_LOCK_CLASS = 0x52464E44  # "RFND"


def committed_elsewhere(conn: Any, order_id: str, thread_id: str) -> int:
    """What other threads' sagas hold on this order: credit notes not voided (placed, maybe
    refunded, maybe about to be)."""
    row = conn.execute(
        "SELECT coalesce(sum(c.amount_cents), 0) AS cents FROM payment_operations c "
        "WHERE c.order_id = %s AND c.thread_id <> %s AND c.step = 'credit_note' AND c.status = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM payment_operations v WHERE v.thread_id = c.thread_id "
        "AND v.step = 'void_credit_note' AND v.status = 'done')",
        (order_id, thread_id),
    ).fetchone()
    return int(row["cents"])


def place_credit_note(state: dict[str, Any], runtime: Runtime[SignoffContext]) -> dict[str, Any]:
    """The saga's first step, after the order is checked again: two threads may have proposed
    refunds of one order, each eligible when it was proposed. Sagas of one order take turns
    (an advisory lock held until this step's outcome is recorded), and one that would refund
    more than was paid stops here, before anything moved, with a holding reply."""
    from nodes.orders import get_order

    case: RefundCase = state["refund"]
    pool, thread_id = runtime.context.pool, current_thread_id()
    with pool.connection() as conn, conn.transaction():
        held = HeldConnection(conn)  # the order's lock is held: its reads and the step's writes use this connection
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ORDER_LOCK_CLASS, case["order_id"]))
        mine = conn.execute("SELECT 1 FROM payment_operations WHERE idempotency_key = %s",
                            (idempotency_key(thread_id, "credit_note"),)).fetchone()
        order = get_order(held, case["order_id"])  # type: ignore[arg-type]
        if mine is None and (order is None or committed_elsewhere(conn, case["order_id"], thread_id) + case["amount_cents"] > order.amount_cents):
            # The refusal is this step's recorded outcome, under its key (a failed credit note that
            # never reached the provider), with its audit row in the same transaction: a run that
            # dies before its checkpoint and reruns this node finds it and audits nothing again.
            failure = ("the order was refunded by another request meanwhile: nothing was done" if order is not None else
                       f"order {case['order_id']} is no longer in the orders: nothing was done")
            key = idempotency_key(thread_id, "credit_note")
            conn.execute(
                "INSERT INTO payment_operations (idempotency_key, thread_id, step, order_id, amount_cents, currency, status, error) "
                "VALUES (%s, %s, 'credit_note', %s, %s, %s, 'failed', %s)",
                (key, thread_id, case["order_id"], case["amount_cents"], case["currency"], failure))
            record_event_on(conn, thread_id, "signoff", "saga_refused", {"order_id": case["order_id"], "reason": failure, "key": key})
            return {"refund": {**case, "status": "failed", "failure": failure}}
        return _place_credit_note.on(held, state, runtime.context)  # type: ignore[attr-defined]  # recorded before (also a refusal): returns that, calls nothing

issue_refund = _step(
    "refund",
    lambda port, case, key: port.refund(key, case["order_id"], case["amount_cents"], case["currency"]),  # type: ignore[arg-type]
    lambda case, row: {"refund_ref": row["reference"], "status": "refunded"},
    lambda case, row: {"status": "failed", "failure": row["error"]},
)
issue_refund.__name__ = "issue_refund"

#: The compensation of place_credit_note. If even the void is refused, that is recorded and
#: audited (saga_compensation_failed) and the open ticket carries it to a person.
void_credit_note = _step(
    "void_credit_note",
    lambda port, case, key: port.void_credit_note(key, case["credit_note"], case["order_id"], case["amount_cents"], case["currency"]),  # type: ignore[arg-type]
    lambda case, row: {"void_ref": row["reference"]},
    lambda case, row: {"void_failure": row["error"]},
)
void_credit_note.__name__ = "void_credit_note"


def route_after_credit_note(state: dict[str, Any]) -> Literal["issue_refund", "send_holding_reply"]:
    return "issue_refund" if (state.get("refund") or {}).get("credit_note") else "send_holding_reply"


def route_after_refund(state: dict[str, Any]) -> Literal["send_approved_reply", "void_credit_note"]:
    return "send_approved_reply" if (state.get("refund") or {}).get("status") == "refunded" else "void_credit_note"
