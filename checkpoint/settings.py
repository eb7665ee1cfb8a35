"""Configuration read from the environment, once per command, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Longest message/brief a thread accepts (bytes of UTF-8); larger input is refused.
MAX_INPUT_BYTES = 64 * 1024


class SettingsError(ValueError):
    """An environment variable holds a value Signoff cannot use; the message names it."""


def _positive(env: "os._Environ[str] | dict[str, str]", name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if kind is int else ''}number, not {raw!r}: fix or unset it") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, not {raw!r}: fix or unset it")
    return value


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
            call_timeout=_positive(env, "SIGNOFF_CALL_TIMEOUT", 60.0),
            max_attempts=int(_positive(env, "SIGNOFF_MAX_ATTEMPTS", 3, int)),
            gate_deadline_hours=_positive(env, "SIGNOFF_GATE_DEADLINE_HOURS", 24.0),
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in force, where it came from) rows; secrets are masked."""
        return [
            ("SIGNOFF_HOME", str(self.home), "default ~/.signoff"),
            ("DATABASE_URL", redact_url(self.database_url) if self.database_url else f"(embedded under {self.home / 'pgdata'})", "unset: embedded PostgreSQL"),
            ("SIGNOFF_MODEL", self.model, "unset: local"),
            ("SIGNOFF_FALLBACK_MODEL", self.fallback_model or "(none)", "unset: see README"),
            ("OPENAI_API_KEY", "set (hidden)" if self.openai_api_key else "(unset)", "needed for openai:* models"),
            ("OPENAI_BASE_URL", self.openai_base_url or "(OpenAI default)", "any OpenAI-compatible server"),
            ("SIGNOFF_CALL_TIMEOUT", f"{self.call_timeout:g}s", "per model call"),
            ("SIGNOFF_MAX_ATTEMPTS", str(self.max_attempts), "per model, before fallback"),
            ("SIGNOFF_GATE_DEADLINE_HOURS", f"{self.gate_deadline_hours:g}h", "default gate deadline"),
        ]


def redact_url(url: str) -> str:
    """Hide the password of a connection URL so it never reaches logs or the terminal."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
