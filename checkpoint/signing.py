"""The server's secret key, and what it signs: decision links and CSRF tokens (browser
sessions are kept on the server: checkpoint/web_sessions.py).

Why HMAC-SHA256 from the standard library and not itsdangerous: a link here must bind five
fields (thread, gate visit, digest, action, expiry) and be checked field by field, each
failure with its own message (expired, another thread, an earlier draft); that is a dozen
lines over `hmac`, and every message stays ours.

The key comes from SIGNOFF_SECRET_KEY, else from `$SIGNOFF_HOME/secret_key`, generated once
with mode 0600 (O_EXCL: two processes starting together agree on one key). Each use derives
its own subkey, so a webhook receiver given the webhook key cannot forge a decision link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

from checkpoint.errors import InvalidInput

MIN_KEY_CHARS = 32
Action = Literal["approve", "reject"]


class LinkError(Exception):
    """A decision link that cannot be used; `status` is the HTTP status it earns."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def secret_key(home: Path, environ: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    given = env.get("SIGNOFF_SECRET_KEY")
    if given:
        if len(given) < MIN_KEY_CHARS:
            raise InvalidInput(f"SIGNOFF_SECRET_KEY must be at least {MIN_KEY_CHARS} characters: "
                               "generate one with `openssl rand -hex 32`, or unset it to use a key generated under SIGNOFF_HOME")
        return given.encode("utf-8")
    path = home / "secret_key"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        if len(key) < MIN_KEY_CHARS:
            raise InvalidInput(f"{path} is damaged (too short): remove it (every link signed with it stops working)") from None
        return key.encode("ascii")
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key.encode("ascii")


def subkey(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, f"signoff:{purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Link:
    """What a decision link is bound to."""

    thread_id: str
    visit: str  # the checkpoint the thread waits at: one gate visit
    digest: str  # the content the reviewer will see and approve
    action: Action
    expires: int  # unix seconds: the gate's deadline

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires, timezone.utc)


def sign_link(key: bytes, link: Link) -> str:
    payload = _b64(json.dumps({"t": link.thread_id, "v": link.visit, "d": link.digest, "a": link.action, "e": link.expires},
                              separators=(",", ":"), sort_keys=True).encode())
    return payload + "." + _b64(hmac.new(subkey(key, "link"), payload.encode(), hashlib.sha256).digest())


def read_link(key: bytes, token: str, *, thread_id: str, now: datetime) -> Link:
    """The link's fields if its signature holds, it is for `thread_id` and not expired;
    LinkError (400 tampered, 400 another thread, 410 expired) otherwise. Whether its gate
    visit is still current is the caller's to check (it needs the database)."""
    payload, _, signature = token.partition(".")
    try:
        expected = hmac.new(subkey(key, "link"), payload.encode(), hashlib.sha256).digest()
        valid = hmac.compare_digest(expected, _unb64(signature))
        fields: dict[str, Any] = json.loads(_unb64(payload)) if valid else {}
        link = Link(str(fields["t"]), str(fields["v"]), str(fields["d"]), fields["a"], int(fields["e"])) if valid else None
    except (ValueError, KeyError, TypeError, UnicodeError):
        link = None
    if link is None or link.action not in ("approve", "reject"):
        raise LinkError("this link is not valid (changed or cut short): open the thread from the inbox instead", 400)
    if link.thread_id != thread_id:
        raise LinkError("this link belongs to another thread: open the thread from the inbox instead", 400)
    if now.timestamp() >= link.expires:
        raise LinkError(f"this link expired at {link.expires_at:%Y-%m-%d %H:%M %Z} with the gate's deadline", 410)
    return link


# --- CSRF ------------------------------------------------------------------------------------


def csrf_token(key: bytes, binding: str) -> str:
    """The token a form carries; bound to the session (or pre-login nonce) cookie, so another
    site can neither read nor forge it (synchroniser token, keyed)."""
    return _b64(hmac.new(subkey(key, "csrf"), binding.encode("utf-8", "surrogatepass"), hashlib.sha256).digest())[:32]


def csrf_ok(key: bytes, binding: str, given: str) -> bool:
    """Compared as bytes: compare_digest refuses str with non-ASCII characters (a forged form may hold any)."""
    return bool(binding) and hmac.compare_digest(csrf_token(key, binding).encode(), (given or "").encode("utf-8", "surrogatepass"))


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 over "<timestamp>.<body>" (the receiver checks the timestamp
    is recent, which stops replays, and compares in constant time)."""
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
