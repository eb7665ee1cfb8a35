"""The notification outbox: who is told that a thread waits, nears its deadline, or expired.

When a run settles at a gate it inserts one row per event (waiting now, a reminder at a
fraction of the deadline, expired at the deadline) and configured channel, keyed by the gate
visit: a run retried or resumed inserts nothing new (ON CONFLICT DO NOTHING), so each channel
hears about each visit once. A delivery loop (in `signoff worker` and `signoff serve`)
claims due rows with SKIP LOCKED and a lease, sends them, and retries failures with
exponential backoff and jitter; a row that keeps failing ends 'failed' and is audited, and
`signoff show` lists it. Nothing here ever fails or blocks the run that created the row.

Delivery is at least once: a process killed between sending and marking a row sent sends it
again after the lease. Every attempt carries the same idempotency key, so receivers drop
the duplicate.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.settings import SettingsError, bounded_number

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8321"
#: How long a claimed row is left alone by other delivery loops (longer than any attempt).
LEASE = timedelta(minutes=2)
#: An 'expired' row due before its gate expired waits this long and looks again.
EXPIRY_RECHECK = timedelta(seconds=15)
BACKOFF_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class NotifyConfig:
    """The channels and delivery settings in force (environment variables)."""

    webhook: str | None = None
    webhook_secret: str | None = None
    slack: str | None = None
    smtp: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    remind_at: float = 0.75  # fraction of the time to the deadline
    max_attempts: int = 8
    backoff: float = 10.0  # seconds before the first retry; doubles each time
    timeout: float = 10.0  # seconds per attempt

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "NotifyConfig":
        def number(name: str, default: float, upper: float, whole: bool = False) -> float:
            raw = (env.get(name) or "").strip()
            return bounded_number(raw, name, upper=upper, whole=whole) if raw else default

        webhook = env.get("SIGNOFF_NOTIFY_WEBHOOK") or None
        secret = env.get("SIGNOFF_NOTIFY_WEBHOOK_SECRET") or None
        if webhook and not secret:
            raise SettingsError("SIGNOFF_NOTIFY_WEBHOOK needs SIGNOFF_NOTIFY_WEBHOOK_SECRET (shared with the receiver, which checks the signature)")
        for name, url in (("SIGNOFF_NOTIFY_WEBHOOK", webhook), ("SIGNOFF_NOTIFY_SLACK", env.get("SIGNOFF_NOTIFY_SLACK"))):
            if url and not url.startswith(("http://", "https://")):
                raise SettingsError(f"{name} must be an http(s):// URL")
        remind = number("SIGNOFF_NOTIFY_REMIND_AT", 0.75, 1.0)
        return cls(
            webhook=webhook, webhook_secret=secret, slack=env.get("SIGNOFF_NOTIFY_SLACK") or None, smtp=env.get("SIGNOFF_NOTIFY_SMTP") or None,
            public_url=(env.get("SIGNOFF_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/"),
            remind_at=remind, max_attempts=int(number("SIGNOFF_NOTIFY_MAX_ATTEMPTS", 8, 100, whole=True)),
            backoff=number("SIGNOFF_NOTIFY_BACKOFF", 10.0, BACKOFF_CAP_SECONDS), timeout=number("SIGNOFF_NOTIFY_TIMEOUT", 10.0, 300.0),
        )

    def channels(self) -> list[str]:
        return [name for name, on in (("webhook", self.webhook), ("slack", self.slack), ("email", self.smtp)) if on]


# --- creating rows (the run that reached a gate) ------------------------------------------------


def on_gate(pool: ConnectionPool, config: NotifyConfig, *, thread_id: str, graph: str, gate: str, visit: str,
            summary: str, digest: str, deadline: datetime, now: datetime) -> int:
    """Queue the notifications of one gate visit; how many rows were new (0 on a re-run)."""
    if not config.channels():
        return 0
    with pool.connection() as conn, conn.transaction():
        return on_gate_on(conn, config, thread_id=thread_id, graph=graph, gate=gate, visit=visit, summary=summary,
                          digest=digest, deadline=deadline, now=now)


def on_gate_on(conn: Any, config: NotifyConfig, *, thread_id: str, graph: str, gate: str, visit: str,
               summary: str, digest: str, deadline: datetime, now: datetime) -> int:
    """`on_gate` on a given connection, inside the caller's transaction: queued only if what
    it announces commits with it (an approval-chain stage, issue 12)."""
    channels = config.channels()
    if not channels:
        return 0
    facts = {"graph": graph, "gate": gate, "summary": summary[:500], "digest": digest, "deadline": deadline.isoformat()}
    remind = now + (deadline - now) * config.remind_at
    events = [("waiting", now), ("expired", deadline)] + ([("reminder", remind)] if 0 < config.remind_at < 1 and remind < deadline else [])
    new = 0
    for event, due in events:
        for channel in channels:
            row = conn.execute(
                "INSERT INTO notifications (thread_id, visit, gate, event, channel, facts, due_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (thread_id, visit, event, channel) DO NOTHING RETURNING id",
                (thread_id, visit, gate, event, channel, Jsonb(facts), due),
            ).fetchone()
            new += row is not None
    return new


def failed_for(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    """Notifications of the thread that gave up (for `show`)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT channel, event, attempts, last_error, due_at FROM notifications WHERE thread_id = %s AND status = 'failed' ORDER BY id",
            (thread_id,),
        ).fetchall()


def of_thread(pool: ConnectionPool, thread_id: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT id, gate, event, channel, status, attempts, last_error, created_at, sent_at FROM notifications "
            "WHERE thread_id = %s ORDER BY id", (thread_id,),
        ).fetchall()


# --- delivering ---------------------------------------------------------------------------------


Sender = Callable[[str, Any], None]


def backoff_seconds(config: NotifyConfig, attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential, capped, with full jitter in its upper half (retries of many rows spread out)."""
    base = min(config.backoff * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS)
    return base * (0.5 + 0.5 * rand())


def _claim(pool: ConnectionPool, now: datetime, limit: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "UPDATE notifications n SET due_at = %(lease)s, attempts = attempts + 1 FROM ("
            "  SELECT id FROM notifications WHERE status = 'pending' AND due_at <= %(now)s ORDER BY due_at, id LIMIT %(n)s"
            "  FOR UPDATE SKIP LOCKED) c WHERE n.id = c.id RETURNING n.*",
            {"now": now, "lease": now + LEASE, "n": limit},
        ).fetchall()


def _decision(pool: ConnectionPool, thread_id: str, visit: str) -> dict[str, Any] | None:
    with pool.connection() as conn:
        return conn.execute("SELECT decision, actor FROM approvals WHERE thread_id = %s AND checkpoint_id = %s",
                            (thread_id, visit)).fetchone()


def _finish(pool: ConnectionPool, row: dict[str, Any], status: str, *, error: str = "", due: datetime | None = None,
            attempts_back: bool = False) -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE notifications SET status = %s, last_error = %s, due_at = coalesce(%s, due_at), "
            "attempts = attempts - %s, sent_at = CASE WHEN %s = 'sent' THEN now() ELSE sent_at END WHERE id = %s",
            (status, error[:500], due, 1 if attempts_back else 0, status, row["id"]),
        )
        if status in ("sent", "failed"):
            detail = {"channel": row["channel"], "event": row["event"], "gate": row["gate"], "attempts": row["attempts"]}
            record_event_on(conn, row["thread_id"], "signoff", f"notification_{status}", {**detail, **({"error": error[:200]} if error else {})})


def deliver_due(pool: ConnectionPool, config: NotifyConfig, key: bytes, now: datetime, *, limit: int = 20,
                send: Callable[[NotifyConfig, str, Any], None] | None = None, rand: Callable[[], float] = random.random) -> list[tuple[int, str]]:
    """One pass: claim due rows, send each, record the outcome; [(id, outcome)]."""
    from nodes.notify import DeliveryError

    send = send or send_one
    outcomes = []
    for row in _claim(pool, now, limit):
        decided = _decision(pool, row["thread_id"], row["visit"])
        if row["event"] == "expired" and decided is None:
            _finish(pool, row, "pending", due=now + EXPIRY_RECHECK, attempts_back=True)  # not expired yet: look again
            outcomes.append((row["id"], "later"))
            continue
        if (row["event"] != "expired" and decided is not None) or (row["event"] == "expired" and decided and decided["decision"] != "expired"):
            _finish(pool, row, "cancelled", error=f"decided ({decided['decision']}) before it was sent")  # type: ignore[index]
            outcomes.append((row["id"], "cancelled"))
            continue
        if row["event"] == "reminder" and now >= datetime.fromisoformat(row["facts"]["deadline"]):
            _finish(pool, row, "cancelled", error="the deadline passed before the reminder went out")  # the expiry notice follows
            outcomes.append((row["id"], "cancelled"))
            continue
        try:
            send(config, row["channel"], render(config, key, row))
        except DeliveryError as exc:
            if row["attempts"] >= config.max_attempts:
                _finish(pool, row, "failed", error=str(exc))
                outcomes.append((row["id"], "failed"))
            else:
                _finish(pool, row, "pending", error=str(exc), due=now + timedelta(seconds=backoff_seconds(config, row["attempts"], rand)))
                outcomes.append((row["id"], "retry"))
            continue
        _finish(pool, row, "sent")
        outcomes.append((row["id"], "sent"))
    return outcomes


def render(config: NotifyConfig, key: bytes, row: dict[str, Any]) -> Any:
    from checkpoint.signing import Link, sign_link
    from nodes.notify import Rendered, one_line

    facts = row["facts"]
    deadline = datetime.fromisoformat(facts["deadline"])
    base = f"{config.public_url}/threads/{row['thread_id']}"

    def link(action: str) -> str:
        return f"{base}/confirm/{sign_link(key, Link(row['thread_id'], row['visit'], facts['digest'], action, int(deadline.timestamp())))}"  # type: ignore[arg-type]

    return Rendered(key=f"signoff/{row['thread_id']}/{row['visit']}/{row['event']}/{row['channel']}", event=row["event"],
                    thread_id=row["thread_id"], graph=facts["graph"], gate=facts["gate"], summary=one_line(facts.get("summary", "")),
                    deadline=deadline.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), digest=facts["digest"],
                    review_url=base, approve_url=link("approve"), reject_url=link("reject"))


def send_one(config: NotifyConfig, channel: str, note: Any) -> None:
    from nodes import notify

    if channel == "webhook":
        notify.send_webhook(config.webhook or "", (config.webhook_secret or "").encode(), note, config.timeout)
    elif channel == "slack":
        notify.send_slack(config.slack or "", note, config.timeout)
    else:
        try:
            target = notify.SmtpTarget.parse(config.smtp or "")
        except ValueError as exc:
            raise notify.DeliveryError(str(exc)) from None
        notify.send_email(target, note, config.timeout)


def delivery_loop(pool: ConnectionPool, config: NotifyConfig, home: Path, stop: threading.Event, *,
                  clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), interval: float = 1.0,
                  log: Callable[[str], None] = lambda line: None) -> None:
    """Deliver until `stop` is set (run in a thread of a worker or of `serve`)."""
    from checkpoint.signing import secret_key

    if not config.channels():
        return
    key = secret_key(home)
    while not stop.is_set():
        try:
            for nid, outcome in deliver_due(pool, config, key, clock()):
                if outcome in ("failed", "retry"):
                    log(f"notification {nid}: {outcome}")
        except Exception as exc:  # noqa: BLE001 - delivery never takes its host process down; the next pass retries
            log(f"notification delivery pass failed: {exc.__class__.__name__}: {str(exc).strip()[:200]}")
        stop.wait(interval)


def start_delivery(pool: ConnectionPool, home: Path, environ: Mapping[str, str], stop: threading.Event, *,
                   clock: Callable[[], datetime] | None = None, log: Callable[[str], None] = lambda line: None) -> threading.Thread | None:
    """The delivery thread for a host process, or None when no channel is configured."""
    config = NotifyConfig.from_env(environ)
    if not config.channels():
        return None
    kwargs: dict[str, Any] = {"log": log, "interval": min(1.0, config.backoff)}
    if clock is not None:
        kwargs["clock"] = clock
    thread = threading.Thread(target=delivery_loop, args=(pool, config, home, stop), kwargs=kwargs, name="signoff-notify", daemon=True)
    thread.start()
    return thread


def queue_for_gate(pool: ConnectionPool, **visit: Any) -> None:
    """`on_gate` with the channels of this process's environment, for the run that settled at
    the gate: never raises (a notification must not fail or block the run). A configuration
    error is audited, so `signoff audit` shows why nobody was told."""
    import os

    try:
        on_gate(pool, NotifyConfig.from_env(os.environ), **visit)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        try:
            with pool.connection() as conn:
                record_event_on(conn, visit["thread_id"], "signoff", "notification_failed",
                                {"error": f"{exc.__class__.__name__}: {str(exc).strip()[:200]}"})
        except Exception:  # noqa: BLE001 - the database is gone; the run reports that itself
            pass


def queue_for_gate_on(conn: Any, **visit: Any) -> None:
    """`queue_for_gate` inside the caller's transaction (a savepoint: a failure here is audited
    and leaves the caller's writes standing); never raises."""
    import os

    try:
        with conn.transaction():
            on_gate_on(conn, NotifyConfig.from_env(os.environ), **visit)
    except Exception as exc:  # noqa: BLE001 - see queue_for_gate
        try:
            with conn.transaction():
                record_event_on(conn, visit["thread_id"], "signoff", "notification_failed",
                                {"error": f"{exc.__class__.__name__}: {str(exc).strip()[:200]}"})
        except Exception:  # noqa: BLE001 - the connection is gone; the caller's commit reports that
            pass
