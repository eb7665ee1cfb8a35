"""The notification outbox: who is told that a thread waits, nears its deadline, or expired.

When a run settles at a gate (or an approval chain moves to its next stage) it inserts one
row announcing the visit, keyed by the visit (and stage): a run retried or resumed inserts
nothing new (ON CONFLICT DO NOTHING). Nothing here reads a notification setting: the
delivery loop (in `signoff worker`), with its own SIGNOFF_NOTIFY_*, fans the announcement out
into one row per event (waiting now, a reminder at a fraction of the deadline, expired at
the deadline) and configured channel, so each channel hears about each visit once. Each
channel is delivered by its own loop, its due rows sent at once, each attempt bounded by the
timeout; a row that cannot be sent, for whatever reason, fails alone and is retried with
exponential backoff and jitter up to its limit, then ends 'failed', audited, and `signoff
show` lists it. Nothing here ever fails or blocks the run that created the row.

A LangGraph API run created with a webhook queues one more kind of row when it ends: channel
RUN_WEBHOOK, addressed to the run's URL with the run as its body, keyed by the run. It needs
no notification setting, so every delivering process (a worker, `serve`) delivers it, with
the same backoff, attempt limit, isolation and audit as the rest.

Delivery is at least once: a process killed between sending and marking a row sent sends it
again after the lease. Every attempt carries the same idempotency key, so receivers drop
the duplicate.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.settings import SettingsError, bounded_number

DEFAULT_PORT = 8321
DEFAULT_PUBLIC_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
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

#: The channel of a row that announces a gate visit (or an approval-chain stage) before any
#: channel is chosen: the delivering process fans it out into one row per event and channel it
#: has configured, with its own reminder fraction. So which channels exist, and how they are
#: reached, is read where notifications are delivered (a worker), never by the process that
#: recorded the approval or ran the thread (a `serve` or a terminal without SIGNOFF_NOTIFY_*).
ANNOUNCED = "any"
#: The channel of a run's webhook (LangGraph's HTTP API), and the one event it has.
RUN_WEBHOOK = "run_webhook"
RUN_ENDED = "ended"


def visit_key(checkpoint_id: str, stage: int = 1) -> str:
    """The key a notification row is stored under: the gate visit, and the approval-chain
    stage after the first (each stage is told of on its own)."""
    return checkpoint_id if stage <= 1 else f"{checkpoint_id}:stage{stage}"


def gate_visit(key: str) -> str:
    """The gate visit (checkpoint) of a row's key: what its links and decision refer to."""
    return key.partition(":stage")[0]


def on_gate(pool: ConnectionPool, *, thread_id: str, graph: str, gate: str, visit: str,
            summary: str, digest: str, deadline: datetime, now: datetime) -> int:
    """Queue the notifications of one gate visit; how many rows were new (0 on a re-run)."""
    with pool.connection() as conn, conn.transaction():
        return on_gate_on(conn, thread_id=thread_id, graph=graph, gate=gate, visit=visit, summary=summary,
                          digest=digest, deadline=deadline, now=now)


def on_gate_on(conn: Any, *, thread_id: str, graph: str, gate: str, visit: str,
               summary: str, digest: str, deadline: datetime, now: datetime) -> int:
    """`on_gate` on a given connection, inside the caller's transaction: queued only if what
    it announces commits with it (an approval-chain stage). One row, whatever is configured
    here (see ANNOUNCED)."""
    facts = {"graph": graph, "gate": gate, "summary": summary[:500], "digest": digest, "deadline": deadline.isoformat(),
             "since": now.isoformat()}
    row = conn.execute(
        "INSERT INTO notifications (thread_id, visit, gate, event, channel, facts, due_at) VALUES (%s, %s, %s, 'waiting', %s, %s, %s) "
        "ON CONFLICT (thread_id, visit, event, channel) DO NOTHING RETURNING id",
        (thread_id, visit, gate, ANNOUNCED, Jsonb(facts), now),
    ).fetchone()
    return int(row is not None)


def queue_run_webhook_on(conn: Any, *, thread_id: str, run_id: str, url: str, body: dict[str, Any]) -> int:
    """Queue the webhook of a run that ended, inside the transaction that records its end (so
    an end is never without its webhook); 0 if it was queued already (the run's id is its key)."""
    row = conn.execute(
        "INSERT INTO notifications (thread_id, visit, gate, event, channel, facts) VALUES (%s, %s, '', %s, %s, %s) "
        "ON CONFLICT (thread_id, visit, event, channel) DO NOTHING RETURNING id",
        (thread_id, run_id, RUN_ENDED, RUN_WEBHOOK, Jsonb({"url": url, "body": body})),
    ).fetchone()
    return int(row is not None)


def cancel_visit_on(conn: Any, thread_id: str, visit: str, reason: str) -> None:
    """Cancel what is still pending for one key (a stage that was approved): nobody is reminded
    of, or told of the expiry of, a stage that no longer waits."""
    conn.execute("UPDATE notifications SET status = 'cancelled', last_error = %s WHERE thread_id = %s AND visit = %s AND status = 'pending'",
                 (reason[:500], thread_id, visit))


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
#: Rows of one channel sent at once in a pass (each in its own thread, each attempt bounded by
#: the timeout): a receiver that hangs costs a pass one timeout, not one per row.
PARALLEL_PER_CHANNEL = 20
#: What a send may overrun its socket timeouts by before the attempt is given up.
ATTEMPT_GRACE_SECONDS = 1.0


def backoff_seconds(config: NotifyConfig, attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential, capped, with full jitter in its upper half (retries of many rows spread out)."""
    base = min(config.backoff * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS)
    return base * (0.5 + 0.5 * rand())


def schedule(config: NotifyConfig, facts: dict[str, Any], queued: datetime) -> list[tuple[str, datetime]]:
    """(event, due) of an announced visit under this process's settings: waiting now, the
    reminder at its fraction of the time to the deadline (if reminders are on), expired at the
    deadline."""
    deadline = datetime.fromisoformat(facts["deadline"])
    since = datetime.fromisoformat(facts["since"]) if facts.get("since") else queued
    remind = since + (deadline - since) * config.remind_at
    return [("waiting", since), ("expired", deadline)] + ([("reminder", remind)] if 0 < config.remind_at < 1 and remind < deadline else [])


def fan_out(pool: ConnectionPool, config: NotifyConfig, now: datetime | None = None, limit: int = 100) -> int:
    """Turn announced visits into one row per event and configured channel, each due when its
    event is (then retried and audited on its own); how many visits. A row for a visit and
    channel that exists already is kept as it is."""
    channels = config.channels()
    if not channels:
        return 0
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT * FROM notifications WHERE channel = %s AND status = 'pending' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (ANNOUNCED, limit)).fetchall()
        if not rows:
            return 0
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO notifications (thread_id, visit, gate, event, channel, facts, due_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (thread_id, visit, event, channel) DO NOTHING",
                [(r["thread_id"], r["visit"], r["gate"], event, channel, Jsonb(r["facts"]), due)
                 for r in rows for event, due in schedule(config, r["facts"], r["created_at"]) for channel in channels])
        # Kept, marked sent (handed to the channels): its key still stops a re-run from announcing the visit again.
        conn.execute("UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],))
    return len(rows)


def _claim(pool: ConnectionPool, config: NotifyConfig, channel: str, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Due rows of one channel, leased to this pass; `attempts` counts this one, never past the
    limit (`attempts_before`: a row claimed at its limit had its last attempt cut short)."""
    lease = now + max(LEASE, timedelta(seconds=2 * config.timeout + 30))
    with pool.connection() as conn:
        return conn.execute(
            "WITH c AS (SELECT id, attempts FROM notifications WHERE status = 'pending' AND channel = %(channel)s AND due_at <= %(now)s "
            "  ORDER BY due_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
            "UPDATE notifications n SET due_at = %(lease)s, attempts = least(c.attempts + 1, %(max)s) FROM c WHERE n.id = c.id "
            "RETURNING n.*, c.attempts AS attempts_before",
            {"channel": channel, "now": now, "lease": lease, "n": limit, "max": config.max_attempts},
        ).fetchall()


def _standing(pool: ConnectionPool, row: dict[str, Any]) -> dict[str, Any]:
    """What the row's gate visit has come to: its decision (if any), and whether the thread
    still waits with the content the row announces (not: it was edited, or moved on)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT (SELECT decision FROM approvals WHERE thread_id = %(t)s AND checkpoint_id = %(v)s) AS decision, "
            "coalesce((SELECT status = 'waiting' AND coalesce(digest = %(d)s, true) FROM threads WHERE thread_id = %(t)s), false) AS waiting",
            {"t": row["thread_id"], "v": gate_visit(row["visit"]), "d": row["facts"].get("digest")},
        ).fetchone()


def _moot(row: dict[str, Any], standing: dict[str, Any], now: datetime) -> tuple[str, str] | None:
    """(outcome, reason) when the row is not to be sent now: 'later' for an expiry notice
    whose gate has not expired yet, 'cancelled' for one that no longer applies; None: send."""
    decided, event = standing["decision"], row["event"]
    if event == "expired":
        if decided == "expired":
            return None
        if decided is not None:
            return "cancelled", f"decided ({decided}) before it was sent"
        return ("later", "") if standing["waiting"] else ("cancelled", "the content changed before the deadline")
    if decided is not None:
        return "cancelled", f"decided ({decided}) before it was sent"
    if not standing["waiting"]:
        return "cancelled", "the content changed before it was sent"
    if event == "reminder" and now >= datetime.fromisoformat(row["facts"]["deadline"]):
        return "cancelled", "the deadline passed before the reminder went out"  # the expiry notice follows
    return None


def _finish(pool: ConnectionPool, row: dict[str, Any], status: str, *, error: str = "", due: datetime | None = None,
            attempts_back: bool = False) -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE notifications SET status = %s, last_error = %s, due_at = coalesce(%s, due_at), "
            "attempts = attempts - %s, sent_at = CASE WHEN %s = 'sent' THEN now() ELSE sent_at END WHERE id = %s",
            (status, error[:500], due, 1 if attempts_back else 0, status, row["id"]),
        )
        if status in ("sent", "failed"):
            detail = {"channel": row["channel"], "event": row["event"], "gate": row["gate"], "attempts": row["attempts"],
                      **({"run_id": row["visit"]} if row["channel"] == RUN_WEBHOOK else {})}
            record_event_on(conn, row["thread_id"], "signoff", f"notification_{status}", {**detail, **({"error": error[:200]} if error else {})})


def _attempt(send: Callable[[NotifyConfig, str, Any], None], config: NotifyConfig, key: bytes, row: dict[str, Any]) -> str | None:
    """Render and send one row; None if it went out, else why not. Anything that goes wrong is
    this row's failure (a malformed URL, a header the mail library refuses), never the pass's."""
    try:
        send(config, row["channel"], render(config, key, row))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        from nodes.notify import DeliveryError, one_line

        return str(exc) if isinstance(exc, DeliveryError) else f"{exc.__class__.__name__}: {one_line(str(exc), 200)}"
    return None


def _send_all(send: Callable[[NotifyConfig, str, Any], None], config: NotifyConfig, key: bytes,
              rows: list[dict[str, Any]]) -> dict[int, str | None]:
    """Send the rows at once, each attempt bounded by the timeout: row id -> error (None: sent).
    An attempt still running at its bound is given up (it keeps its thread until its socket
    times out; the idempotency key lets a receiver drop it should it arrive after all)."""
    if not rows:
        return {}
    executor = ThreadPoolExecutor(max_workers=min(len(rows), PARALLEL_PER_CHANNEL), thread_name_prefix="signoff-notify-send")
    try:
        futures = {executor.submit(_attempt, send, config, key, row): row["id"] for row in rows}
        done, _ = wait(futures, timeout=config.timeout * max(1, -(-len(rows) // PARALLEL_PER_CHANNEL)) + ATTEMPT_GRACE_SECONDS)
        return {nid: (future.result() if future in done else f"timed out after {config.timeout:g}s") for future, nid in futures.items()}
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def deliver_channel(pool: ConnectionPool, config: NotifyConfig, key: bytes, now: datetime, channel: str, *, limit: int = 20,
                    send: Callable[[NotifyConfig, str, Any], None] | None = None,
                    rand: Callable[[], float] = random.random) -> list[tuple[int, str]]:
    """One pass over one channel: claim its due rows, send them, record each outcome."""
    outcomes: list[tuple[int, str]] = []
    sendable = []
    for row in _claim(pool, config, channel, now, limit):
        if row["attempts_before"] >= config.max_attempts:  # its last attempt was cut short (the process died)
            _finish(pool, row, "failed", error=row["last_error"] or f"gave up after {row['attempts']} attempts")
            outcomes.append((row["id"], "failed"))
            continue
        moot = None if row["channel"] == RUN_WEBHOOK else _moot(row, _standing(pool, row), now)  # a run's end never goes stale
        if moot is None:
            sendable.append(row)
        elif moot[0] == "later":
            _finish(pool, row, "pending", due=now + EXPIRY_RECHECK, attempts_back=True)  # not expired yet: look again
            outcomes.append((row["id"], "later"))
        else:
            _finish(pool, row, "cancelled", error=moot[1])
            outcomes.append((row["id"], "cancelled"))
    errors = _send_all(send or send_one, config, key, sendable)
    for row in sendable:
        error = errors[row["id"]]
        if error is None:
            _finish(pool, row, "sent")
            outcomes.append((row["id"], "sent"))
        elif row["attempts"] >= config.max_attempts:
            _finish(pool, row, "failed", error=error)
            outcomes.append((row["id"], "failed"))
        else:
            _finish(pool, row, "pending", error=error, due=now + timedelta(seconds=backoff_seconds(config, row["attempts"], rand)))
            outcomes.append((row["id"], "retry"))
    return outcomes


def deliver_due(pool: ConnectionPool, config: NotifyConfig, key: bytes, now: datetime, *, limit: int = 20,
                send: Callable[[NotifyConfig, str, Any], None] | None = None, rand: Callable[[], float] = random.random,
                channels: list[str] | None = None) -> list[tuple[int, str]]:
    """One pass: fan out announced visits, then every channel at once (a channel whose
    receiver hangs holds up no other); [(id, outcome)]."""
    if channels != [RUN_WEBHOOK]:
        fan_out(pool, config, now)
    lanes = channels if channels is not None else config.channels()
    if len(lanes) == 1:
        return deliver_channel(pool, config, key, now, lanes[0], limit=limit, send=send, rand=rand)
    with ThreadPoolExecutor(max_workers=max(len(lanes), 1), thread_name_prefix="signoff-notify") as executor:
        passes = [executor.submit(deliver_channel, pool, config, key, now, channel, limit=limit, send=send, rand=rand) for channel in lanes]
        return [outcome for done in passes for outcome in done.result()]


def render(config: NotifyConfig, key: bytes, row: dict[str, Any]) -> Any:
    from checkpoint.signing import Link, sign_link
    from nodes.notify import Rendered, RunWebhook, one_line

    facts = row["facts"]
    if row["channel"] == RUN_WEBHOOK:
        return RunWebhook(url=facts["url"], body=facts["body"], key=row["visit"])
    deadline = datetime.fromisoformat(facts["deadline"])
    base = f"{config.public_url}/threads/{row['thread_id']}"

    def link(action: str) -> str:
        link = Link(row["thread_id"], gate_visit(row["visit"]), facts["digest"], action, int(deadline.timestamp()))  # type: ignore[arg-type]
        return f"{base}/confirm/{sign_link(key, link)}"

    return Rendered(key=f"signoff/{row['thread_id']}/{row['visit']}/{row['event']}/{row['channel']}", event=row["event"],
                    thread_id=row["thread_id"], graph=facts["graph"], gate=facts["gate"], summary=one_line(facts.get("summary", "")),
                    deadline=deadline.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), digest=facts["digest"],
                    review_url=base, approve_url=link("approve"), reject_url=link("reject"))


def send_one(config: NotifyConfig, channel: str, note: Any) -> None:
    from nodes import notify

    if channel == RUN_WEBHOOK:
        notify.send_run_webhook(note, config.timeout)
    elif channel == "webhook":
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
                  log: Callable[[str], None] = lambda line: None, channel: str | None = None) -> None:
    """Deliver until `stop` is set (run in a thread of a worker): one channel, or all of them."""
    from checkpoint.signing import secret_key

    if not config.channels() and channel != RUN_WEBHOOK:
        return
    key = b"" if channel == RUN_WEBHOOK else secret_key(home)  # a run's webhook carries no signed link
    lanes = [channel] if channel else None
    while not stop.is_set():
        try:
            for nid, outcome in deliver_due(pool, config, key, clock(), channels=lanes):
                if outcome in ("failed", "retry"):
                    log(f"notification {nid}: {outcome}")
        except Exception as exc:  # noqa: BLE001 - delivery never takes its host process down; the next pass retries
            log(f"notification delivery pass failed: {exc.__class__.__name__}: {str(exc).strip()[:200]}")
        stop.wait(interval)


def start_delivery(pool: ConnectionPool, home: Path, environ: Mapping[str, str], stop: threading.Event, *,
                   clock: Callable[[], datetime] | None = None, log: Callable[[str], None] = lambda line: None) -> list[threading.Thread]:
    """The delivery threads of a host process, one per configured channel so each is sent
    independently of the others, and always one for runs' webhooks (they need no setting).
    The settings are this process's: the one that delivers. A bad setting raises after the
    runs' webhook lane has started (with the default limits if the bad one is among them)."""
    kwargs: dict[str, Any] = {"log": log}
    if clock is not None:
        kwargs["clock"] = clock
    lanes = [start_run_webhooks(pool, environ, stop, **kwargs)]
    config = NotifyConfig.from_env(environ)
    kwargs["interval"] = min(1.0, config.backoff)
    for channel in config.channels():
        lane = threading.Thread(target=delivery_loop, args=(pool, config, home, stop), kwargs={**kwargs, "channel": channel},
                                name=f"signoff-notify-{channel}", daemon=True)
        lane.start()
        lanes.append(lane)
    return lanes


def start_run_webhooks(pool: ConnectionPool, environ: Mapping[str, str], stop: threading.Event,
                       **kwargs: Any) -> threading.Thread:
    """The delivery thread of runs' webhooks alone (`serve`, which delivers no other channel).
    It needs no home: a run's webhook carries no signed link."""
    try:
        config = NotifyConfig.from_env(environ)
    except SettingsError:
        config = NotifyConfig()  # the lane that reports the bad setting is the caller's; these still go out
    lane = threading.Thread(target=delivery_loop, args=(pool, config, Path(), stop),
                            kwargs={"interval": min(1.0, config.backoff), **kwargs, "channel": RUN_WEBHOOK},
                            name=f"signoff-notify-{RUN_WEBHOOK}", daemon=True)
    lane.start()
    return lane


def queue_for_gate(pool: ConnectionPool, **visit: Any) -> None:
    """`on_gate` for the run that settled at the gate: never raises (a notification must not
    fail or block the run); a failure is audited, so `signoff audit` shows why nobody was told."""
    try:
        on_gate(pool, **visit)
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
    try:
        with conn.transaction():
            on_gate_on(conn, **visit)
    except Exception as exc:  # noqa: BLE001 - see queue_for_gate
        try:
            with conn.transaction():
                record_event_on(conn, visit["thread_id"], "signoff", "notification_failed",
                                {"error": f"{exc.__class__.__name__}: {str(exc).strip()[:200]}"})
        except Exception:  # noqa: BLE001 - the connection is gone; the caller's commit reports that
            pass
