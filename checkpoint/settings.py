"""Configuration read from the environment, once per command, never at import time."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from checkpoint.errors import InvalidInput

#: Longest message/brief a thread accepts (bytes of UTF-8); larger input is refused.
MAX_INPUT_BYTES = 64 * 1024


class SettingsError(InvalidInput):
    """An environment variable holds a value Signoff cannot use; the message names it."""


#: Upper bounds that keep arithmetic on these values meaningful (a deadline of 1e308 hours
#: overflows a datetime; a timeout of a year is a hang).
MAX_DEADLINE_HOURS = 24 * 366 * 10
MAX_CALL_TIMEOUT = 3600.0
MAX_ATTEMPTS = 20
MAX_MODEL_CONCURRENCY = 1000
MAX_PRUNE_AFTER_DAYS = 3660.0


def bounded_number(raw: str | float, name: str, *, upper: float, whole: bool = False) -> float:
    """A finite number in (0, upper]; SettingsError naming `name` otherwise (nan, inf, 1e308,
    zero, negative, words)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a {'whole ' if whole else ''}number, not {str(raw)!r}: fix or unset it") from None
    if whole and value.is_integer() is False:
        raise SettingsError(f"{name} must be a whole number, not {str(raw)!r}: fix or unset it")
    if not math.isfinite(value) or value <= 0 or value > upper:
        raise SettingsError(f"{name} must be a positive number up to {upper:g}, not {str(raw)!r}: fix or unset it")
    return value


def _positive(env: "os._Environ[str] | dict[str, str]", name: str, default: float, *, upper: float, whole: bool = False) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return bounded_number(raw.strip(), name, upper=upper, whole=whole)


@dataclass(frozen=True)
class Settings:
    """Everything Signoff reads from the environment, with its defaults applied."""

    home: Path
    database_url: str | None
    model: str
    fallback_model: str | None
    openai_api_key: str | None
    openai_base_url: str | None
    call_timeout: float
    max_attempts: int
    gate_deadline_hours: float
    #: model calls in flight per model in one worker; None: nodes.resilient.ModelLimiter's defaults
    model_concurrency: int | None = None
    #: a worker prunes threads finished this many days ago as it goes (`db prune`); None: off
    prune_after_days: float | None = None
    #: the writing graphs' reviewer (SIGNOFF_REVIEW_MODEL); None: the writer's models review too
    review_model: str | None = None
    #: the hand-over playbook file (SIGNOFF_HANDOVER_PLAYBOOK); None: the shipped one
    handover_playbook: Path | None = None
    #: the environment these settings were read from, for `describe` (never shown whole: repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("SIGNOFF_HOME") or "~/.signoff").expanduser()
        return cls(
            home=home,
            database_url=env.get("DATABASE_URL") or None,
            model=env.get("SIGNOFF_MODEL") or "local",
            fallback_model=env.get("SIGNOFF_FALLBACK_MODEL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            call_timeout=_positive(env, "SIGNOFF_CALL_TIMEOUT", 60.0, upper=MAX_CALL_TIMEOUT),
            max_attempts=int(_positive(env, "SIGNOFF_MAX_ATTEMPTS", 3, upper=MAX_ATTEMPTS, whole=True)),
            gate_deadline_hours=_positive(env, "SIGNOFF_GATE_DEADLINE_HOURS", 24.0, upper=MAX_DEADLINE_HOURS),
            model_concurrency=int(_positive(env, "SIGNOFF_MODEL_CONCURRENCY", 0, upper=MAX_MODEL_CONCURRENCY, whole=True)) or None,
            prune_after_days=_positive(env, "SIGNOFF_PRUNE_AFTER_DAYS", 0, upper=MAX_PRUNE_AFTER_DAYS) or None,
            review_model=(env.get("SIGNOFF_REVIEW_MODEL") or "").strip() or None,
            handover_playbook=Path(raw).expanduser() if (raw := (env.get("SIGNOFF_HANDOVER_PLAYBOOK") or "").strip()) else None,
            environ=dict(env),
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in force, where it came from) rows, one for every variable Signoff
        reads; every value passes through `redacted`, so no credential is ever shown."""
        return [*self._model_rows(), *service_rows(self.environ)]

    def _model_rows(self) -> list[tuple[str, str, str]]:
        return [
            ("SIGNOFF_HOME", str(self.home), "default ~/.signoff"),
            ("DATABASE_URL", redact_url(self.database_url) if self.database_url else f"(embedded under {self.home / 'pgdata'})", "unset: embedded PostgreSQL"),
            ("SIGNOFF_MODEL", self.model, "unset: local"),
            ("SIGNOFF_FALLBACK_MODEL", self.fallback_model or "(none)", "unset: no fallback (docs/local-model.md)"),
            ("SIGNOFF_REVIEW_MODEL", self.review_model or "(SIGNOFF_MODEL)", "judgement calls: review scores, support hand-over; unset: SIGNOFF_MODEL"),
            ("SIGNOFF_HANDOVER_PLAYBOOK", str(self.handover_playbook or "(shipped: nodes/data/handover.toml)"), "topics a specialist must handle"),
            ("OPENAI_API_KEY", "set (hidden)" if self.openai_api_key else "(unset)", "needed for openai:* models"),
            ("OPENAI_BASE_URL", redacted("OPENAI_BASE_URL", self.openai_base_url) if self.openai_base_url else "(OpenAI default)",
             "any OpenAI-compatible server"),
            ("SIGNOFF_CALL_TIMEOUT", f"{self.call_timeout:g}s", "per model call"),
            ("SIGNOFF_MAX_ATTEMPTS", str(self.max_attempts), "per model, before fallback"),
            ("SIGNOFF_GATE_DEADLINE_HOURS", f"{self.gate_deadline_hours:g}h", "default gate deadline"),
            ("SIGNOFF_MODEL_CONCURRENCY", str(self.model_concurrency) if self.model_concurrency else "(2 local, 16 remote)", "model calls in flight per model, per worker"),
            ("SIGNOFF_PRUNE_AFTER_DAYS", f"{self.prune_after_days:g} days" if self.prune_after_days else "(off)", "workers prune threads finished this long ago"),
        ]


#: Variables whose whole value is a credential: shown only as set or unset.
_CREDENTIAL_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
#: Webhook URLs whose path is the credential (whoever holds a Slack incoming-webhook URL can post).
_CAPABILITY_URLS = ("SIGNOFF_NOTIFY_WEBHOOK", "SIGNOFF_NOTIFY_SLACK")
_GRAPH_DEADLINE = re.compile(r"SIGNOFF_(?!GATE_)[A-Z0-9_]+_DEADLINE_HOURS")


def redacted(name: str, value: str) -> str:
    """`value` of the variable `name` as `signoff config` may show it: a credential variable
    as "set (hidden)", a URL or connection string without its password, secret query
    parameters (api_key, token, ...) or, for webhook URLs, the path that is their key."""
    if _CREDENTIAL_NAME.search(name):
        return "set (hidden)"
    shown = redact_url(value)
    if name in _CAPABILITY_URLS and "://" in shown:
        try:
            parts = urlsplit(shown)
        except ValueError:
            return shown
        if parts.path.strip("/") or parts.query:
            shown = f"{parts.scheme}://{parts.netloc}/*** (path hidden: it is the receiver's key)"
    return shown


def service_rows(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The rows of the variables read by the parts beyond the models (identity, payments, web
    links, notifications), then every other SIGNOFF_* variable set: `config` lists them all."""
    home = Path(env.get("SIGNOFF_HOME") or "~/.signoff").expanduser()

    def row(name: str, default: str, note: str) -> tuple[str, str, str]:
        raw = (env.get(name) or "").strip()
        return (name, redacted(name, raw) if raw else default, note)

    graphs = sorted(name for name in env if _GRAPH_DEADLINE.fullmatch(name))
    rows = [
        row("SIGNOFF_USER", "(unset)", "refused when set: who acts is SIGNOFF_TOKEN's owner or the OS login"),
        row("SIGNOFF_TOKEN", "(unset)", "a reviewer token: who acts on the CLI"),
        *(row(name, "", "this graph's gate deadline, hours") for name in graphs),
        *([] if graphs else [("SIGNOFF_<GRAPH>_DEADLINE_HOURS", "(none set)", "per graph, e.g. SIGNOFF_SUPPORT_DEADLINE_HOURS; "
                                                                              "unset: SIGNOFF_GATE_DEADLINE_HOURS")]),
        row("SIGNOFF_PAYMENTS_URL", "(unset: the PostgreSQL ledger)", "a payment provider's base URL"),
        row("SIGNOFF_PAYMENTS_KEY", "(unset)", "the payment provider's bearer token"),
        row("SIGNOFF_PAYMENTS_TIMEOUT", "10", "seconds per payment call"),
        row("SIGNOFF_PUBLIC_URL", "http://127.0.0.1:8321", "where links in notifications point"),
        row("SIGNOFF_SECRET_KEY", f"(unset: generated into {home / 'secret_key'})", "signs links and sessions"),
        row("SIGNOFF_NOTIFY_WEBHOOK", "(unset)", "JSON webhook URL"),
        row("SIGNOFF_NOTIFY_WEBHOOK_SECRET", "(unset)", "the webhook's HMAC secret"),
        row("SIGNOFF_NOTIFY_SLACK", "(unset)", "Slack incoming-webhook URL"),
        row("SIGNOFF_NOTIFY_SMTP", "(unset)", "smtp:// or smtps:// URL with from and to"),
        row("SIGNOFF_NOTIFY_REMIND_AT", "0.75", "reminder at this fraction of the time to the deadline (1: none)"),
        row("SIGNOFF_NOTIFY_BACKOFF", "10", "seconds before the first delivery retry, doubling"),
        row("SIGNOFF_NOTIFY_MAX_ATTEMPTS", "8", "delivery attempts before a notification is failed"),
        row("SIGNOFF_NOTIFY_TIMEOUT", "10", "seconds per delivery attempt"),
        row("SIGNOFF_WEBHOOK_ALLOW_PRIVATE", "1", "0: runs' webhooks may not reach loopback or private addresses"),
    ]
    known = {name for name, _, _ in rows} | _MODEL_VARIABLES
    rows += [row(name, "", "set in the environment") for name in sorted(env) if name.startswith("SIGNOFF_") and name not in known]
    return rows


#: What Settings itself reads (its rows come first in `describe`).
_MODEL_VARIABLES = {"SIGNOFF_HOME", "SIGNOFF_MODEL", "SIGNOFF_FALLBACK_MODEL", "SIGNOFF_REVIEW_MODEL", "SIGNOFF_HANDOVER_PLAYBOOK",
                    "SIGNOFF_CALL_TIMEOUT", "SIGNOFF_MAX_ATTEMPTS", "SIGNOFF_GATE_DEADLINE_HOURS", "SIGNOFF_MODEL_CONCURRENCY",
                    "SIGNOFF_PRUNE_AFTER_DAYS"}

#: Keys whose value is a credential, in a key=value connection string or a URL's query.
_SECRET_KEY = (r"(?:(?:ssl)?password|passwd|pwd|secret|client_secret|token|access_token|auth|api[_-]?key|apikey|key|"
               r"sig|signature|credentials?)")
#: `password=...` in a key=value connection string (quoted or not)
_KV_SECRET = re.compile(rf"(\b{_SECRET_KEY}\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
#: `password=...` in a URL's query string
_QUERY_SECRET = re.compile(rf"([?&]{_SECRET_KEY}=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Hide every password in a connection string, whatever its form (`user:pw@` in a URL,
    `?password=` in its query, `password=` in key=value form), so it never reaches output."""
    if "://" not in url:
        return _KV_SECRET.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL: hide everything after the scheme
        return url.split("://", 1)[0] + "://***"
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{hostinfo}")
    return _QUERY_SECRET.sub(r"\1***", urlunsplit(parts))


def scrub_secrets(text: str, url: str) -> str:
    """`text` (an error message about `url`) with every password from `url` replaced by ***,
    for drivers that quote the connection string back in their errors."""
    secrets = [m.group(2).strip("'") for m in _KV_SECRET.finditer(url)]
    secrets += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    try:
        password = urlsplit(url).password if "://" in url else None
    except ValueError:
        password = None
    secrets += [password] if password else []
    for secret in sorted({s for s in secrets if s and s != "***"}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
