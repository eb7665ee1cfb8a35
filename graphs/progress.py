"""Rendering a run's events for a person: rich on a terminal, plain text when piped."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from graphs.runner import Event, Stop


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
        text += f" tokens={call.get('input_tokens', 0)}/{call.get('output_tokens', 0)}"
        parts.append(text)
    return "  ".join(parts)


class ProgressPrinter:
    """Prints one line per finished node, streams tokens under the node producing them."""

    def __init__(self, console: Console, *, show_tokens: bool = True) -> None:
        self.console = console
        self.show_tokens = show_tokens
        self._streaming_node: str | None = None

    def _end_stream(self) -> None:
        if self._streaming_node is not None:
            self.console.print()
            self._streaming_node = None

    def __call__(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "token" and self.show_tokens:
            if self._streaming_node != event["node"]:
                self._end_stream()
                self.console.print(f"  [dim]{escape(event['node'])} >[/dim] ", end="")
                self._streaming_node = event["node"]
            self.console.print(escape(event["text"]), end="", soft_wrap=True, highlight=False)
        elif kind == "node_end":
            self._end_stream()
            mark = "[red]x[/red]" if event.get("error") else "[green]✓[/green]"
            status = f"[red]{escape(str(event['error']))[:160]}[/red]" if event.get("error") else "ok"
            calls = describe_calls(event.get("calls", []))
            self.console.print(f"{mark} {escape(event['node']):<22} {status:<4} {event['duration']:6.2f}s  [dim]{escape(calls)}[/dim]", highlight=False)
            for line in event.get("update", {}).get("warnings", []) or []:
                self.console.print(f"  [yellow]warning:[/yellow] {escape(str(line))}")
        elif kind == "retry":
            self._end_stream()
            self.console.print(f"  [yellow]retry[/yellow] {escape(event['node'])} on {escape(event['model'])}: attempt {event['attempt']} failed ({escape(event['error'])}), waiting {event['wait']:.1f}s", highlight=False)
        elif kind == "fallback":
            self._end_stream()
            self.console.print(f"  [yellow]fallback[/yellow] {escape(event['node'])} -> {escape(event['model'])} after {escape(event['error'])}", highlight=False)

    def finish(self, stop: Stop) -> None:
        """Say how the thread stopped and what to do next."""
        self._end_stream()
        tid = stop.thread_id
        if stop.status == "waiting":
            self.console.print(f"\n[bold]waiting[/bold] at gate [bold]{stop.gate}[/bold] (digest {stop.digest})")
            if stop.values.get("needs_human"):
                self.console.print(f"  [yellow]needs a human:[/yellow] {escape(str(stop.values.get('error')))}")
            self.console.print(f"  review:  signoff show {tid}")
            self.console.print(f"  approve: signoff approve {tid} --expect {stop.digest}")
            self.console.print(f"  reject:  signoff reject {tid} --feedback \"what to change\"")
        elif stop.status == "finished":
            self.console.print(f"\n[bold green]finished[/bold green]: {escape(stop.outcome)}")
        elif stop.status == "interrupted":
            self.console.print(f"\n[bold yellow]interrupted[/bold yellow] at a step boundary ({escape(stop.error or '')}); resume with: signoff resume {tid}")
        else:
            self.console.print(f"\n[bold red]failed[/bold red]: {escape(stop.error or '')}; resume with: signoff resume {tid}")
