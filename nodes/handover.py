"""The hand-over playbook: topics a specialist must handle, matched by rule before any model decides.

Whether a message is a legal threat, a police request, an account takeover or a death is a
decision a person relies on, and the small local model cannot make it (tests/benchmarks/
support_quality.py: the 0.5B escalated 4 of 11 such messages even with the topics offered by
name). So each topic carries `match` patterns, case-insensitive regular expressions written by
the operator; a message that matches one is handed over whatever the models say, and the
topics are also offered to the support agent by name, so a model can hand over more, never
less. Patterns only ever send a message to a person: untrusted text can cause a hand-over,
never an answer.

The shipped playbook is nodes/data/handover.toml; SIGNOFF_HANDOVER_PLAYBOOK names another file.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from checkpoint.errors import InvalidInput

#: Bounds the work a pattern can be given: a customer message longer than this is matched on
#: its beginning (the CLI already bounds messages; this keeps the rule cheap whatever calls it).
MAX_MATCHED_CHARS = 20_000


class PlaybookError(InvalidInput):
    """The hand-over playbook file cannot be used; the message names the file and what to fix."""


@dataclass(frozen=True)
class HandoverTopic:
    name: str
    #: what the support agent's model is shown for this option
    describe: str
    patterns: tuple[re.Pattern[str], ...]
    #: patterns that hand over only when no retrieved article names what they matched (their
    #: `code` group, else the whole match): "an error no article names" is a rule about the
    #: knowledge base, so "error 429", which the rate-limit article explains, stays answerable
    unless_named: tuple[re.Pattern[str], ...] = ()

    def matches(self, message: str, articles: Sequence[str] = ()) -> bool:
        text = message[:MAX_MATCHED_CHARS]
        if any(p.search(text) for p in self.patterns):
            return True
        known = "\n".join(articles).casefold()
        return any(_named(m).casefold() not in known for p in self.unless_named for m in p.finditer(text))


@dataclass(frozen=True)
class Playbook:
    topics: tuple[HandoverTopic, ...]
    source: str

    def match(self, message: str, articles: Sequence[str] = ()) -> HandoverTopic | None:
        """The first topic (in file order) one of whose patterns occurs in the message;
        `articles`: the text of the articles retrieved for it (see `unless_named`)."""
        return next((t for t in self.topics if t.matches(message, articles)), None)

    def pattern_count(self) -> int:
        return sum(len(t.patterns) + len(t.unless_named) for t in self.topics)

    def names(self) -> list[str]:
        return [t.name for t in self.topics]


def shipped_playbook_path() -> Path:
    return Path(str(resources.files("nodes") / "data" / "handover.toml"))


def load_playbook(path: Path | None = None) -> Playbook:
    """The playbook at `path` (the shipped one if None), checked whole: PlaybookError naming the
    file and the topic on anything unusable, so a bad file stops a command before it writes.
    A command reads it once (runtime.session.make_context); the shipped one is read once per process."""
    return _read(path) if path is not None else _shipped()


@functools.cache
def _shipped() -> Playbook:
    return _read(shipped_playbook_path())


def _read(path: Path) -> Playbook:
    where = f"hand-over playbook {path}"
    if not path.is_file():
        raise PlaybookError(f"{where}: no such file: check SIGNOFF_HANDOVER_PLAYBOOK (or unset it for the shipped one)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PlaybookError(f"{where}: not a readable TOML file ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})") from None
    entries = data.get("topic")
    if not isinstance(entries, list) or not entries:
        raise PlaybookError(f"{where}: no [[topic]] tables: add at least one with name, describe and match")
    topics, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        topics.append(_topic(entry, f"{where}, topic {number}", seen))
    return Playbook(tuple(topics), str(path))


def _topic(entry: object, where: str, seen: set[str]) -> HandoverTopic:
    if not isinstance(entry, dict):
        raise PlaybookError(f"{where}: must be a [[topic]] table")
    name, describe, match = entry.get("name"), entry.get("describe"), entry.get("match", [])
    if not isinstance(name, str) or not name.strip() or len(name) > 60:
        raise PlaybookError(f"{where}: `name` must be a short text (at most 60 characters)")
    if name in seen:
        raise PlaybookError(f"{where}: the name {name!r} is used twice: names must differ")
    seen.add(name)
    if not isinstance(describe, str) or not describe.strip():
        raise PlaybookError(f"{where} ({name}): `describe` must be a text saying what the topic covers")
    if not isinstance(match, list) or not all(isinstance(p, str) and p.strip() for p in match):
        raise PlaybookError(f"{where} ({name}): `match` must be a list of regular expressions (it may be empty)")
    unless = entry.get("unless_an_article_names", [])
    if not isinstance(unless, list) or not all(isinstance(p, str) and p.strip() for p in unless):
        raise PlaybookError(f"{where} ({name}): `unless_an_article_names` must be a list of regular expressions (it may be empty)")
    return HandoverTopic(name.strip(), " ".join(describe.split()), _compiled(match, where, name), _compiled(unless, where, name))


def _compiled(patterns: list[str], where: str, name: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise PlaybookError(f"{where} ({name}): bad regular expression {pattern!r} ({exc})") from None
    return tuple(compiled)


def _named(match: re.Match[str]) -> str:
    """What an `unless_an_article_names` pattern matched: its `code` group if it has one."""
    return (match.groupdict().get("code") or match.group(0)).strip()
