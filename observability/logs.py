"""Log lines of the long-running processes (`signoff worker`, `signoff serve`): plain text, or
with SIGNOFF_LOG_FORMAT=json one JSON object a line (time, level, event, thread_id, message
and the event's own fields) for a log shipper to index without parsing sentences."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable

from checkpoint.errors import InvalidInput

FORMATS = ("text", "json")


def log_format(env: Any = None) -> str:
    """SIGNOFF_LOG_FORMAT, checked: `text` (the default) or `json`."""
    value = (os.environ if env is None else env).get("SIGNOFF_LOG_FORMAT", "").strip().lower() or "text"
    if value not in FORMATS:
        raise InvalidInput("SIGNOFF_LOG_FORMAT must be text or json")
    return value


def level_of(message: str) -> str:
    """A line's level, from how Signoff words it: warnings start so, failures say so."""
    lowered = message.lower()
    if lowered.startswith("warning") or "skipped" in lowered or "notifications off" in lowered:
        return "warning"
    if " failed" in lowered or lowered.startswith("lost ") or "error" in lowered.split(":", 1)[0]:
        return "error"
    return "info"


def json_line(message: str, *, event: str = "log", level: str | None = None, thread_id: str | None = None, **fields: Any) -> str:
    """One log line as one JSON object (ASCII, so a control character in untrusted text stays inert)."""
    document = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level or level_of(message),
                "event": event, "thread_id": thread_id, "message": message, **fields}
    return json.dumps(document, ensure_ascii=True, default=str, separators=(",", ":"))


def make_logger(write_text: Callable[[str], None], write_raw: Callable[[str], None] | None = None,
                fmt: str | None = None) -> Callable[..., None]:
    """`log(message, event=..., thread_id=..., **fields)`: `write_text(message)` in text format,
    one JSON line through `write_raw` (default: stdout, flushed) in json format."""
    if (fmt or log_format()) != "json":
        def text(message: str, **fields: Any) -> None:
            write_text(message)

        return text

    def raw(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    out = write_raw or raw

    def as_json(message: str, **fields: Any) -> None:
        out(json_line(message, **fields))

    return as_json
