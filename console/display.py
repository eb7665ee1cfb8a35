"""Making untrusted text safe to show: customer messages, drafts, notes, names, model output,
file names. Every command prints such text through `safe` or `safe_line`, never raw.

A terminal obeys escape sequences (clear the screen, conceal text, rewrite a hyperlink,
reorder text with bidi controls), and a line-based listing trusts newlines to separate records.
So control characters are made visible as `\\xNN` / `\\uNNNN` escapes, and in one-line fields
newlines and tabs too; rich markup in the text is escaped so `[red]` stays literal.
Imports nothing heavy: the CLI uses it before anything else loads.
"""

from __future__ import annotations

import re
from datetime import timedelta

# C0 controls except \n and \t, DEL, C1 controls, and the invisible format characters that
# can reorder or hide text (bidi overrides and isolates, zero-width joiners, BOM, etc.).
_UNSAFE_BLOCK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
_UNSAFE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _surrogates_visible(text: str) -> str:
    """Lone surrogates (bytes that were not UTF-8) as \\udcNN, so printing never raises."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def visible(text: object, *, one_line: bool = False) -> str:
    """`text` with its control and invisible format characters shown as escapes (plain text,
    for JSON or files); `one_line` also escapes newlines and tabs."""
    string = _surrogates_visible(str(text))
    return (_UNSAFE_LINE if one_line else _UNSAFE_BLOCK).sub(_visible, string)


def safe(text: object) -> str:
    """Multi-line untrusted text for a rich console: controls visible, markup escaped."""
    from rich.markup import escape

    return escape(visible(text))


def safe_line(text: object, limit: int | None = None) -> str:
    """One-line untrusted text for a rich console (a field of a listing): newlines visible too,
    cut to `limit` characters (before escaping, so an escape is never cut in half)."""
    from rich.markup import escape

    line = visible(text, one_line=True)
    if limit is not None and len(line) > limit:
        line = line[: max(limit - 1, 0)] + "…"
    return escape(line)


def token_counts(call: dict[str, object]) -> str | None:
    """`in/out`, or None where the server reported no usage (llama.cpp's server sends none
    with a streamed answer)."""
    if call.get("input_tokens") is None and call.get("output_tokens") is None:
        return None
    return f"{call.get('input_tokens') or 0}/{call.get('output_tokens') or 0}"


def age(delta: timedelta) -> str:
    """A duration as its largest whole unit: `45s`, `12m`, `3h`, `2d` (listings' age columns)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
