"""`signoff serve`'s log line per request: the same text whether rich renders it or not, and
not rendered by rich when nobody reads it on a terminal (a log file, a pipe, a container)."""

from __future__ import annotations

import io

from rich.console import Console

from console.display import safe_line
from console.terminal import log_line_writer

LINE = "POST /langgraph/threads/t[red]1\x1b[2J\u202e/runs/wait 200 12ms"


def test_a_request_line_to_a_pipe_is_written_without_rich_and_reads_as_rich_would_print_it(monkeypatch):
    shown = Console(file=io.StringIO(), highlight=False)
    shown.print(safe_line(LINE), soft_wrap=True)
    piped = Console(file=io.StringIO(), highlight=False)
    assert not piped.is_terminal
    write = log_line_writer(piped)

    def rendered(*args, **kwargs):
        raise AssertionError("rendered through rich")

    monkeypatch.setattr(Console, "print", rendered)
    write(LINE)
    assert piped.file.getvalue() == shown.file.getvalue()
    assert "\x1b" not in piped.file.getvalue() and "[red]" in piped.file.getvalue()
