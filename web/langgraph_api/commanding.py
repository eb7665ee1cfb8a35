"""A run's `command.goto` / `command.update`: LangGraph's way to change a thread's state and
continue it from chosen nodes, served without letting it move a thread past a sign-off.

While the thread waits at an interrupt or gate, they are refused (409): the wait is answered
with `command.resume`, and a resume carries neither, so what the reviewer decided on is what
runs. Otherwise they are an act of authority over the thread: accepted only from someone who
may decide the graph's gates (policy.py: a member of a role the policy gives the graph's gates,
anyone when it configures no roles) and who did not request the thread, nor acts through a
token its requester minted after the request (no self-approval); refused with 403 for
everyone else. An accepted command is audited (`command_applied`: who, the nodes, the update)
in the transaction that queues it; a refused one stores nothing."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from checkpoint.audit import record_event_on
from web.decide import HttpError


def command_parts(command: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]] | None:
    """(update, goto nodes) of a command that has either, checked for shape; None otherwise."""
    if not command or (command.get("goto") is None and command.get("update") is None):
        return None
    if command.get("resume") is not None:
        raise HttpError(409, "a resume may not carry command.update or command.goto: the decision applies to what the reviewer "
                             "saw; resume first, then send the update or goto in a run of its own")
    update, goto = command.get("update"), command.get("goto")
    if update is not None and not isinstance(update, dict):
        raise HttpError(422, "command.update must be an object of state keys and values")
    goto = [goto] if isinstance(goto, str) else goto
    if goto is not None and not (isinstance(goto, list) and all(isinstance(n, str) for n in goto)):
        raise HttpError(422, "command.goto must be a node name or a list of node names")
    return update, list(goto or [])


def check_against_graph(entry: Any, update: dict[str, Any] | None, goto: list[str]) -> None:
    """422 for a node or a state key the graph does not have, naming the ones it has."""
    nodes = [n for n in entry.graph.nodes if not n.startswith("__")]
    for node in goto:
        if node not in nodes:
            raise HttpError(422, f"command.goto {node!r}: graph {entry.name} has no such node (it has {', '.join(nodes)})")
    keys = [k for k in entry.graph.channels if not k.startswith(("__", "branch:"))]
    for key in update or {}:
        if key not in keys:
            raise HttpError(422, f"command.update {key!r}: graph {entry.name}'s state has no such key (it has {', '.join(keys)})")


def ensure_authority(pool: Any, graph: str, row: Any, actor: str, token_id: int | None) -> None:
    """403 unless `actor` may move this thread: someone who may decide its graph's gates and
    is not its requester (nor acting through a token its requester minted after the request)."""
    from checkpoint.approval_chain import minted_for_own_request, token_of
    from checkpoint.policy import policy_for_request

    requester = row.requested_by
    if requester is not None and actor == requester:
        raise HttpError(403, f"{actor} requested thread {row.thread_id} and may not move it past its sign-off: command.goto and "
                             "command.update are for a reviewer of its gates")
    token = token_of(pool, token_id)
    if token is not None and minted_for_own_request((token.created_by, token.created_through), token.created_at, requester,
                                                    row.created_at):
        raise HttpError(403, f"this token was created by {requester}, who requested thread {row.thread_id}, after the request: "
                             "it may not move the thread")
    policy = policy_for_request(pool, requester, row.created_at)
    if not policy.roles_configured:
        return
    roles = {s.role for key, stages in policy.gates.items() if key.startswith(f"{graph}.") for s in stages if s.role}
    members = {m for role in (roles or set(policy.roles)) for m in policy.roles.get(role, ())}
    if actor not in members:
        raise HttpError(403, f"{actor} may not decide graph {graph}'s gates under the approval policy ({policy.source}): "
                             f"command.goto and command.update are for {', '.join(sorted(roles or policy.roles))}")


def ensure_not_waiting(pool: Any, thread_id: str, row: Any) -> None:
    """409 while the thread waits at an interrupt or a gate (by its row or its checkpoint)."""
    from runtime.thread_runner import ThreadRunner

    waiting = [] if row.status != "waiting" else [row.gate or "its gate"]
    if not waiting:
        runner = ThreadRunner.for_thread(pool, thread_id)
        pending = runner.pending(runner.snapshot(thread_id)) if hasattr(runner, "pending") else []
        waiting = [p.node for p in pending]
    if waiting:
        raise HttpError(409, f"thread {thread_id} waits at {waiting[0]} for a decision: answer it with command.resume first "
                             "(command.goto and command.update never skip a sign-off)")


def queue_command(pool: Any, thread_id: str, row: Any, entry: Any, command: dict[str, Any], options: dict[str, Any], actor: str,
                  token_id: int | None) -> None:
    """Check and queue the command as the thread's next run, audited in the same transaction."""
    from runtime.commanded import queued_command

    parts = command_parts(command)
    assert parts is not None
    update, goto = parts
    check_against_graph(entry, update, goto)
    if row is None:
        raise HttpError(409, f"thread {thread_id} has not run yet: start it with an input; command.goto and command.update "
                             "act on a thread that has run")
    ensure_not_waiting(pool, thread_id, row)
    ensure_authority(pool, entry.name, row, actor, token_id)
    detail = {"graph": entry.name, "goto": goto, "update": update or {}} | ({"token": token_id} if token_id is not None else {})
    with pool.connection() as conn, conn.transaction():
        conn.execute("UPDATE threads SET status = 'queued', input = %s, run_options = %s, updated_at = now() WHERE thread_id = %s",
                     (Jsonb(queued_command(update, goto)), Jsonb(options), thread_id))
        record_event_on(conn, thread_id, actor, "command_applied", detail)
