"""What `show` tells of a thread of a project graph: where it stands, its state values as
LangGraph's get_state gives them (JSON, large values cut with a note), the questions it waits
on with their ids, the digest a decision binds to, its graph version, and why it cannot run
if its graph is unknown here or fails to load."""

from __future__ import annotations

import json
from typing import Any

#: characters of one state value shown before it is cut (with a note of its full size)
VALUE_LIMIT = 2000


def project_thread(pool: Any, thread_id: str) -> dict[str, Any] | None:
    """The view of a thread of a project graph; None for a thread of a built-in graph."""
    from checkpoint import threads
    from checkpoint.decisions import decisions_of
    from checkpoint.errors import SignoffError
    from runtime.interrupts import digest_of, jsonable
    from runtime.registry import builtin_names, get_entry

    row = threads.get_existing(pool, thread_id)
    if row.graph in builtin_names():
        return None
    view: dict[str, Any] = {
        "thread_id": thread_id, "graph": row.graph, "status": row.status, "gate": row.gate if row.status == "waiting" else None,
        "summary": row.summary, "deadline": row.deadline if row.status == "waiting" else None, "version": row.graph_version,
        "version_now": None, "error": row.graph_error, "digest": row.digest if row.status == "waiting" else None,
        "pending": [], "values": {}, "truncated": [], "created_at": row.created_at, "updated_at": row.updated_at,
        "decisions": [dict(d) for d in decisions_of(pool, thread_id)],
    }
    values: dict[str, Any]
    try:
        from runtime.runner import InterruptRunner, answers_for

        runner = InterruptRunner(pool, get_entry(row.graph, thread_id=thread_id))
        runner.row = row
        snapshot = runner.snapshot(thread_id)
        values = dict(snapshot.values)
        view["version_now"] = runner.version()
        pending = runner.pending(snapshot)
        if pending:
            checkpoint_id = runner._checkpoint_id(snapshot)
            decided = answers_for(pool, thread_id, [p.visit(checkpoint_id) for p in pending])
            view["pending"] = [{**p.as_json(), "decided": p.visit(checkpoint_id) in decided} for p in pending]
            view["digest"] = digest_of(pending, checkpoint_id)
    except SignoffError as exc:  # its graph is not here: the saved values still show
        view["error"] = str(exc)
        from checkpoint.database import make_saver

        saved = make_saver(pool).get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        values = {k: v for k, v in (saved.checkpoint.get("channel_values") or {}).items() if not k.startswith(("__", "branch:"))} if saved else {}
    for key, value in values.items():
        plain = jsonable(value)
        text = json.dumps(plain, ensure_ascii=False)
        if len(text) > VALUE_LIMIT:
            view["values"][key] = text[:VALUE_LIMIT]
            view["truncated"].append({"key": key, "chars": len(text)})
        else:
            view["values"][key] = plain
    return view
