"""`--json`: one JSON document on stdout per command, errors as `{"error": ...}` on stderr.

Scripts read these instead of parsing tables meant for people, so the field names are a
contract (listed in docs/json-output.md) and the encoding is safe to print: ASCII only, every control,
bidi or other non-ASCII character escaped by the JSON encoder (`\\u001b`), so untrusted text
reaches a terminal as inert escapes and a parser as the exact original string. Times are ISO
8601 with their offset (UTC from the database), durations in seconds. Imports nothing heavy.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import PurePath
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def dumps(document: Any) -> str:
    """One line of ASCII JSON (no NaN: a value that is not a number is a bug, not output)."""
    return json.dumps(document, ensure_ascii=True, allow_nan=False, default=_default, separators=(",", ":"))


def error_document(message: str, exit_code: int) -> str:
    """The one line a failing `--json` command writes to stderr."""
    return dumps({"error": message, "exit_code": exit_code})
