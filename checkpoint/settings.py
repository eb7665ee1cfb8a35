"""Configuration read from the environment, once per command, never at import time."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
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
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in force, where it came from) rows; secrets are masked."""
        return [
            ("SIGNOFF_HOME", str(self.home), "default ~/.signoff"),
            ("DATABASE_URL", redact_url(self.database_url) if self.database_url else f"(embedded under {self.home / 'pgdata'})", "unset: embedded PostgreSQL"),
            ("SIGNOFF_MODEL", self.model, "unset: local"),
            ("SIGNOFF_FALLBACK_MODEL", self.fallback_model or "(none)", "unset: see README"),
            ("SIGNOFF_REVIEW_MODEL", self.review_model or "(SIGNOFF_MODEL)", "judgement calls: review scores, support hand-over; unset: SIGNOFF_MODEL"),
            ("SIGNOFF_HANDOVER_PLAYBOOK", str(self.handover_playbook or "(shipped: nodes/data/handover.toml)"), "topics a specialist must handle"),
            ("OPENAI_API_KEY", "set (hidden)" if self.openai_api_key else "(unset)", "needed for openai:* models"),
            ("OPENAI_BASE_URL", self.openai_base_url or "(OpenAI default)", "any OpenAI-compatible server"),
            ("SIGNOFF_CALL_TIMEOUT", f"{self.call_timeout:g}s", "per model call"),
            ("SIGNOFF_MAX_ATTEMPTS", str(self.max_attempts), "per model, before fallback"),
            ("SIGNOFF_GATE_DEADLINE_HOURS", f"{self.gate_deadline_hours:g}h", "default gate deadline"),
            ("SIGNOFF_MODEL_CONCURRENCY", str(self.model_concurrency) if self.model_concurrency else "(2 local, 16 remote)", "model calls in flight per model, per worker"),
            ("SIGNOFF_PRUNE_AFTER_DAYS", f"{self.prune_after_days:g} days" if self.prune_after_days else "(off)", "workers prune threads finished this long ago"),
        ]


_SECRET_KEY = r"(?:ssl)?password"
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
