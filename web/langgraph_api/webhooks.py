"""A run's webhook: checked when the run is created (checkpoint/webhook_targets.py), and queued
in the notification outbox in the transaction that records how the run ended, so an end is
never without its webhook and is posted once per delivery policy, by whichever process
delivers notifications (checkpoint/notifications.py), even after the `serve` that saw the run
end was killed."""

from __future__ import annotations

import json
import os
from typing import Any

from web.decide import HttpError


def checked_webhook(url: str | None) -> str | None:
    """The run's webhook URL if a webhook may be posted there; 422 (one line) if not."""
    from checkpoint.webhook_targets import RefusedTarget, check_url

    if url is None:
        return None
    try:
        check_url(url, os.environ)
    except RefusedTarget as exc:
        raise HttpError(422, str(exc)) from None
    return url


def run_body(pool: Any, row: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """The run as LangGraph's server posts it when the run ends: the run, its final status,
    the thread's values (with its interrupts) and the error, if any."""
    from web.langgraph_api.http import dumps
    from web.langgraph_api.runs import as_run, result_of

    body = {**as_run(row), "status": status}
    try:
        body["values"] = result_of(pool, row["thread_id"])
    except Exception:  # noqa: BLE001 - a run that never started has no state to show
        body["values"] = {}
    if error:
        body["error"] = error
    return json.loads(dumps(body))


def queue_on(conn: Any, row: dict[str, Any], body: dict[str, Any] | None) -> None:
    """Queue the run's webhook in the caller's transaction (nothing when it has none)."""
    from checkpoint.notifications import queue_run_webhook_on

    if row.get("webhook") and body is not None:
        queue_run_webhook_on(conn, thread_id=row["thread_id"], run_id=str(row["run_id"]), url=row["webhook"], body=body)


def record_end(pool: Any, row: dict[str, Any], status: str, error: str | None) -> bool:
    """Record how an open run ended and queue its webhook, in one transaction; False when
    another process recorded its end first (its webhook is queued by that one)."""
    body = run_body(pool, row, status, error) if row.get("webhook") else None
    with pool.connection() as conn, conn.transaction():
        ended = conn.execute("UPDATE api_runs SET status = %s, error = %s, updated_at = now() "
                             "WHERE run_id = %s AND status IN ('pending', 'running') RETURNING run_id",
                             (status, error, row["run_id"])).fetchone()
        if ended is not None:
            queue_on(conn, row, body)
    return ended is not None
