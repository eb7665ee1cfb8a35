"""Rendering a run's events for a person: rich on a terminal, plain text when piped."""

from __future__ import annotations

import atexit
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live

from console.display import safe, safe_line, token_counts
from rich.table import Table

from graphs.registry import get_spec
from runtime.thread_runner import Event, Stop


def describe_calls(calls: list[dict[str, Any]]) -> str:
    """`model=... attempts=2 retries=1 tokens=12/40` for the model calls a node made."""
    if not calls:
        return ""
    parts = []
    for call in calls:
        model = call.get("model") or "none answered"
        retries = len(call.get("retries", []))
        text = f"model={model}"
        if call.get("fallback_used"):
            text += " (fallback)"
        if retries:
            text += f" retries={retries}"
        if (tokens := token_counts(call)) is not None:
            text += f" tokens={tokens}"
        parts.append(text)
    return "  ".join(parts)


@dataclass
class _Researcher:
    started: float
    index: int = 0
    subtask: str = "(starting)"
    status: str = "running"
    duration: float | None = None
    calls: str = ""


@dataclass
class ResearcherBoard:
    """The parallel researchers of a run, one row each: subtask, status, duration.

    Rows come from the `research` node's node_start/node_end events (keyed by task id); the
    subtask, which only the Send payload knows, from the node's `researcher_started` event."""

    NODE = "research"
    rows: dict[str, _Researcher] = field(default_factory=dict)

    def start(self, task_id: str) -> None:
        self.rows.setdefault(task_id, _Researcher(started=time.monotonic()))

    def name(self, task_id: str, index: int, subtask: str) -> _Researcher:
        row = self.rows.setdefault(task_id, _Researcher(started=time.monotonic()))
        row.index, row.subtask = index, subtask
        return row

    def end(self, event: Event) -> _Researcher:
        row = self.rows.setdefault(event["id"], _Researcher(started=time.monotonic()))
        failures = event.get("update", {}).get("failures") or []
        error = event.get("error") or (failures[0]["error"] if failures else None)
        row.status = f"failed: {error}" if error else "ok"
        row.duration = event["duration"]
        row.calls = describe_calls(event.get("calls", []))
        return row

    @property
    def running(self) -> bool:
        return any(row.duration is None for row in self.rows.values())

    def __rich__(self) -> Table:
        table = Table("#", "subtask", "status", "time", title="researchers", box=None, pad_edge=False, title_justify="left")
        for row in sorted(self.rows.values(), key=lambda r: r.index):
            seconds = row.duration if row.duration is not None else time.monotonic() - row.started
            colour = "green" if row.status == "ok" else "yellow" if row.status == "running" else "red"
            table.add_row(str(row.index or "?"), safe_line(row.subtask), f"[{colour}]{safe_line(row.status, 80)}[/{colour}]", f"{seconds:5.1f}s")
        return table


class ProgressPrinter:
    """Prints one line per finished node, streams tokens under the node producing them."""

    def __init__(self, console: Console, *, show_tokens: bool = True) -> None:
        self.console = console
        self.show_tokens = show_tokens
        self._streaming_node: str | None = None
        self.researchers = ResearcherBoard()
        self._live: Live | None = None

    def _end_stream(self) -> None:
        if self._streaming_node is not None:
            self.console.print()
            self._streaming_node = None

    def _researcher_event(self, event: Event) -> bool:
        """Side by side in a live table on a terminal, one plain line per change when piped."""
        kind, board = event.get("event"), self.researchers
        if kind == "node_start" and event.get("node") == board.NODE:
            board.start(event["id"])
            if self.console.is_terminal and self._live is None:
                self._end_stream()
                self._live = Live(board, console=self.console, refresh_per_second=4)
                self._live.start()
                atexit.register(self.close)  # a run that dies mid-way must not leave the cursor hidden
        elif kind == "researcher_started":
            row = board.name(event["id"], event.get("index", 0), event.get("subtask", ""))
            if not self.console.is_terminal:
                self.console.print(f"  research [{row.index}] started: {safe_line(row.subtask)}", soft_wrap=True)
        elif kind == "node_end" and event.get("node") == board.NODE:
            row = board.end(event)
            if not self.console.is_terminal:
                mark = "[green]✓[/green]" if row.status == "ok" else "[red]x[/red]"
                self.console.print(f"{mark} research [{row.index}] {safe_line(row.subtask)}  {safe_line(row.status)}  {row.duration:.2f}s  [dim]{safe_line(row.calls)}[/dim]", highlight=False, soft_wrap=True)
            self._stop_live(only_if_done=True)
        else:
            return False
        return True

    def _stop_live(self, only_if_done: bool = False) -> None:
        if self._live is not None and not (only_if_done and self.researchers.running):
            self._live.refresh()
            self._live.stop()
            self._live = None
            atexit.unregister(self.close)

    def close(self) -> None:
        """Stop any live display and end a token line (safe to call more than once)."""
        self._stop_live()
        self._end_stream()

    def __call__(self, event: Event) -> None:
        kind = event.get("event")
        if self._researcher_event(event):
            return
        if kind == "token" and self.show_tokens and event.get("text"):  # a streamed tool call's chunk has no text to show
            if self._streaming_node != event["node"]:
                self._end_stream()
                self.console.print(f"  [dim]{safe_line(event['node'])} >[/dim] ", end="")
                self._streaming_node = event["node"]
            self.console.print(safe(event["text"]), end="", soft_wrap=True, highlight=False)
        elif kind == "node_end":
            self._end_stream()
            update = event.get("update") or {}
            skipped = update.get("not_reviewed")  # a reviewer that may not judge (nodes/writing.py)
            mark = "[red]x[/red]" if event.get("error") else "[dim]-[/dim]" if skipped else "[green]✓[/green]"
            status = f"[red]{safe_line(event['error'], 160)}[/red]" if event.get("error") else "skipped" if skipped else "ok"
            calls = describe_calls(event.get("calls", []))
            self.console.print(f"{mark} {safe_line(event['node']):<22} {status:<4} {event['duration']:6.2f}s  [dim]{safe_line(calls)}[/dim]", highlight=False, soft_wrap=True)
            for line in update.get("warnings") or []:
                self.console.print(f"  [yellow]warning:[/yellow] {safe_line(line)}", soft_wrap=True)
        elif kind == "retry":
            self._end_stream()
            self.console.print(f"  [yellow]retry[/yellow] {safe_line(event['node'])} on {safe_line(event['model'])}: attempt {event['attempt']} failed ({safe_line(event['error'])}), waiting {event['wait']:.1f}s", highlight=False)
        elif kind == "fallback":
            self._end_stream()
            self.console.print(f"  [yellow]fallback[/yellow] {safe_line(event['node'])} -> {safe_line(event['model'])} after {safe_line(event['error'])}", highlight=False)

    def finish(self, stop: Stop) -> None:
        """Say how the thread stopped and what to do next."""
        self._stop_live()
        self._end_stream()
        tid = stop.thread_id
        if stop.status == "waiting":
            self.console.print(f"\n[bold]waiting[/bold] at gate [bold]{stop.gate}[/bold] (digest {stop.digest})")
            if stop.values.get("needs_human"):
                self.console.print(f"  [yellow]needs a human:[/yellow] {safe_line(stop.values.get('error'))}", soft_wrap=True)
            self.console.print(f"  review:  signoff show {tid}")
            self.console.print(f"  approve: signoff approve {tid} --expect {stop.digest}")
            self.console.print(f"  reject:  signoff reject {tid} --feedback \"what to change\"")
            from graphs.registry import GRAPHS

            if stop.graph not in GRAPHS:  # a project graph's interrupt() may ask for a value instead
                self.console.print(f"  or answer: signoff answer {tid} --value JSON --expect {stop.digest}")
            elif get_spec(stop.graph).hands_over:
                self.console.print(f"  or give it to a specialist: signoff reject {tid} --hand-over")
        elif stop.status == "finished":
            self.console.print(f"\n[bold green]finished[/bold green]: {safe_line(stop.outcome)}", soft_wrap=True)
        elif stop.status == "interrupted":
            self.console.print(f"\n[bold yellow]interrupted[/bold yellow] at a step boundary ({safe_line(stop.error or '')}); resume with: signoff resume {tid}")
        else:
            self.console.print(f"\n[bold red]failed[/bold red]: {safe_line(stop.error or '')}; resume with: signoff resume {tid}")
