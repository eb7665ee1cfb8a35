"""Notification channels: a signed JSON webhook, a Slack incoming webhook (Block Kit), and
plain-text email over SMTP. Each takes one rendered notification and delivers it or raises
DeliveryError with a short reason; retrying is the outbox's job (checkpoint/notifications.py).

Content from customers and models (the summary) is untrusted: Slack gets every block as
plain_text (no mrkdwn, so no `<!channel>` or planted links) and the top-level `text` (the
notification fallback, which Slack always parses) with its control characters escaped;
email headers get one printable line.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from checkpoint.signing import webhook_signature

SUMMARY_CHARS = 300


class DeliveryError(Exception):
    """One failed delivery attempt (the outbox retries it)."""


@dataclass(frozen=True)
class Rendered:
    """What every channel says about one notification."""

    key: str  # idempotency key: the same for every attempt of this notification
    event: str  # waiting | reminder | expired
    thread_id: str
    graph: str
    gate: str
    summary: str
    deadline: str  # ISO 8601, UTC
    digest: str
    review_url: str
    approve_url: str
    reject_url: str

    def headline(self) -> str:
        what = {"waiting": "Sign-off needed", "reminder": "Reminder: sign-off needed", "expired": "Deadline passed"}[self.event]
        return f"{what}: {self.graph} / {self.gate} ({self.thread_id})"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.key, "event": self.event, "thread_id": self.thread_id, "graph": self.graph, "gate": self.gate,
                "summary": self.summary, "deadline": self.deadline, "digest": self.digest,
                "links": {"review": self.review_url, "approve": self.approve_url, "reject": self.reject_url}}


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    """Untrusted text as one printable line (control characters become spaces)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(flat.split())[:limit]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    try:
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=timeout)
    except httpx.TimeoutException:
        raise DeliveryError(f"timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{exc.__class__.__name__}: {one_line(str(exc), 200)}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}: {one_line(response.text, 200)}")


@dataclass(frozen=True)
class RunWebhook:
    """A LangGraph API run's webhook: the run as LangGraph's server posts it, to the URL the
    run was created with."""

    url: str
    body: dict[str, Any]
    key: str  # the run's id: the same for every attempt


def send_run_webhook(note: RunWebhook, timeout: float) -> None:
    """POST the run, stamped with when it was sent, with the run's id as Idempotency-Key. The
    URL is checked again first: its host may resolve elsewhere than when the run was created."""
    import os

    from checkpoint.webhook_targets import RefusedTarget, check_url

    try:
        check_url(note.url, os.environ)
    except RefusedTarget as exc:
        raise DeliveryError(str(exc)) from None
    from datetime import datetime, timezone

    body = {**note.body, "webhook_sent_at": datetime.now(timezone.utc).isoformat()}
    _post(note.url, json.dumps(body, separators=(",", ":")).encode(), {"Idempotency-Key": note.key}, timeout)


def send_webhook(url: str, secret: bytes, note: Rendered, timeout: float) -> None:
    """POST the notification as JSON, signed (X-Signoff-Signature over timestamp and body)
    and carrying an Idempotency-Key the receiver uses to drop a retried duplicate."""
    body = json.dumps(note.as_json(), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    _post(url, body, {"Idempotency-Key": note.key, "X-Signoff-Timestamp": timestamp,
                      "X-Signoff-Signature": webhook_signature(secret, timestamp, body)}, timeout)


def slack_escaped(text: str) -> str:
    """Text for a field Slack parses (the top-level `text`): its three control characters as
    the entities Slack documents, so `<!channel>` and `<http://x|label>` show as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(note: Rendered) -> dict[str, Any]:
    """Block Kit: header, summary, the facts, Approve / Reject / Open buttons that are links to
    the confirmation pages (a click never decides by itself). Every text object is plain_text:
    nothing in a notification needs formatting, so no field can carry a mention or a link."""
    def text(value: str) -> dict[str, Any]:
        return {"type": "plain_text", "text": value, "emoji": False}

    return {
        "text": slack_escaped(f"{note.headline()}: {note.summary[:150]}"),
        "blocks": [
            {"type": "header", "text": text(note.headline()[:150])},
            {"type": "section", "text": text(note.summary or "(no summary)")},
            {"type": "section", "fields": [
                text(f"Graph: {note.graph}"), text(f"Gate: {note.gate}"),
                text(f"Deadline: {note.deadline}"), text(f"Digest: {note.digest}"),
            ]},
            {"type": "actions", "elements": [
                {"type": "button", "text": text("Approve"), "style": "primary", "url": note.approve_url, "action_id": "approve"},
                {"type": "button", "text": text("Reject"), "style": "danger", "url": note.reject_url, "action_id": "reject"},
                {"type": "button", "text": text("Open"), "url": note.review_url, "action_id": "open"},
            ]},
        ],
    }


def send_slack(url: str, note: Rendered, timeout: float) -> None:
    _post(url, json.dumps(slack_message(note)).encode(), {}, timeout)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    tls: str = "none"  # none | starttls | ssl

    @classmethod
    def parse(cls, url: str) -> "SmtpTarget":
        """smtp://[user:pass@]host[:port]?from=A&to=B,C[&starttls=1], or smtps:// (TLS from the start)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SIGNOFF_NOTIFY_SMTP must look like smtp://host:25?from=signoff@example.com&to=lead@example.com")
        query = parse_qs(parts.query)
        sender = (query.get("from") or [""])[0]
        recipients = tuple(r.strip() for value in query.get("to", []) for r in value.split(",") if r.strip())
        if not sender or not recipients:
            raise ValueError("SIGNOFF_NOTIFY_SMTP needs ?from=ADDRESS&to=ADDRESS[,ADDRESS]")
        tls = "ssl" if parts.scheme == "smtps" else ("starttls" if (query.get("starttls") or ["0"])[0] in ("1", "true") else "none")
        return cls(parts.hostname, parts.port or (465 if tls == "ssl" else 25), sender, recipients,
                   unquote(parts.username) if parts.username else None, unquote(parts.password) if parts.password else None, tls)


def email_message(target: SmtpTarget, note: Rendered) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = one_line(note.headline(), 200)
    message["From"] = target.sender
    message["To"] = ", ".join(target.recipients)
    message["Message-ID"] = f"<{note.key.replace('/', '.')}@signoff>"  # the idempotency key, for mail tools that dedupe
    message.set_content(
        f"{note.headline()}\n\n"
        f"Summary:  {note.summary}\n"
        f"Deadline: {note.deadline}\n"
        f"Digest:   {note.digest}\n\n"
        f"Review:   {note.review_url}\n"
        f"Approve:  {note.approve_url}\n"
        f"Reject:   {note.reject_url}\n\n"
        "Each link opens a page that shows the content and asks you to confirm; opening it decides nothing.\n"
    )
    return message


def send_email(target: SmtpTarget, note: Rendered, timeout: float) -> None:
    message = email_message(target, note)
    try:
        if target.tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=timeout)
        with client:
            if target.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            if target.user:
                client.login(target.user, target.password or "")
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {exc.__class__.__name__}: {one_line(str(exc), 200)}") from None
