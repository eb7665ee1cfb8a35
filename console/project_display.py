"""Terminal rendering of what Signoff knows about any LangGraph graph: the graphs listing,
the versions check, and a project thread as `show` prints it (or one JSON document)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from console.display import safe_line
from console.terminal import emit, out


def print_graphs(rows: list[dict[str, Any]], project: Any, *, as_json: bool) -> None:
    if as_json:
        emit({"config": str(project.path) if project.path else None, "config_error": project.error, "graphs": rows})
        return
    if project.error:
        out.print(f"[yellow]{safe_line(project.error)}[/yellow]", soft_wrap=True)
    for row in rows:
        gates = ", ".join([f"before {g}" for g in row["gates"]["before"]] + [f"after {g}" for g in row["gates"]["after"]]) or "-"
        if row["error"]:
            out.print(f"[bold]{safe_line(row['name'])}[/bold]  {safe_line(row['source'])}  [red]cannot load:[/red] {safe_line(row['error'])}", soft_wrap=True)
            continue
        out.print(f"[bold]{safe_line(row['name'])}[/bold]  {safe_line(row['source'])}  version {row['version']}  gates: {safe_line(gates)}  "
                  f"input: {safe_line(', '.join(row['input']) or '-')}", soft_wrap=True)
    if not project.path:
        out.print("no langgraph.json here: only the built-in graphs (run from your project's folder, or pass --config PATH)")


def print_check(rows: list[dict[str, Any]], checked: int, *, as_json: bool) -> None:
    if as_json:
        emit({"checked": checked, "cannot_resume": rows})
        return
    for row in rows:
        out.print(f"{row['thread_id']}  {safe_line(row['graph'])}  {row['status']}  started on {row['version'] or '-'}, "
                  f"now {row['version_now'] or '-'}: {safe_line(row['reason'])}", soft_wrap=True)
    out.print(f"{len(rows)} of {checked} unfinished threads cannot resume on the graphs here" if rows
              else f"all {checked} unfinished threads can resume on the graphs here")


def print_project_thread(view: dict[str, Any], *, as_json: bool, failed_notifications: Sequence[dict[str, Any]] = ()) -> None:
    if as_json:
        emit(view)
        return
    head = f"[bold]{view['thread_id']}[/bold]  graph={safe_line(view['graph'])}  status={view['status']}"
    out.print(head + (f"  gate={safe_line(view['gate'])}" if view["gate"] else "") + f"  version={view['version'] or '-'}", soft_wrap=True)
    out.print(f"summary: {safe_line(view['summary'])}", soft_wrap=True)
    if view["error"]:
        out.print(f"[red]cannot run here:[/red] {safe_line(view['error'])}", soft_wrap=True)
    if view["version_now"] and view["version"] and view["version_now"] != view["version"]:
        out.print(f"the graph here is version {view['version_now']}: `signoff graphs check` says whether it can resume this thread")
    out.print("state:")
    for key, value in view["values"].items():
        note = next((f"  (cut: {t['chars']} characters in all; `show --json` has the same cut)" for t in view["truncated"] if t["key"] == key), "")
        out.print(f"  {safe_line(key)}: {safe_line(json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value, 300)}{note}", soft_wrap=True)
    if view["pending"]:
        out.print(f"waiting on (digest [bold]{view['digest']}[/bold]):")
        for p in view["pending"]:
            done = " (decided, runs on)" if p["decided"] else ""
            if p["actions"]:
                for a in p["actions"]:
                    out.print(f"  {p['id']}  {safe_line(p['node'])}: {safe_line(a['action'])} {safe_line(json.dumps(a['args'], ensure_ascii=False, sort_keys=True), 300)}"
                              f"  allowed: {', '.join(a['allowed'])}{done}", soft_wrap=True)
                    if a.get("description"):
                        out.print(f"    {safe_line(a['description'], 300)}", soft_wrap=True)
            elif p["kind"] in ("before", "after"):
                out.print(f"  {p['id']}  paused {p['kind']} node {safe_line(p['node'])}: approve runs on, reject stops{done}", soft_wrap=True)
            else:
                out.print(f"  {p['id']}  {safe_line(p['node'])} asks: {safe_line(json.dumps(p['value'], ensure_ascii=False), 300)}"
                          f"  (signoff answer {view['thread_id']} --value JSON --expect {view['digest']}){done}", soft_wrap=True)
        if view["deadline"]:
            out.print(f"deadline: {view['deadline']:%Y-%m-%d %H:%M %Z}")
    for d in view["decisions"]:
        out.print(f"{d['decided_at']:%Y-%m-%d %H:%M:%S} {safe_line(d['gate'])}: {d['decision']} by {safe_line(d['actor'])}"
                  + (f" - {safe_line(d['note'])}" if d["note"] else ""), soft_wrap=True)
    from console.thread_display import print_failed_notifications

    print_failed_notifications(failed_notifications)  # a run's webhook, or a reviewer's notice, that gave up
