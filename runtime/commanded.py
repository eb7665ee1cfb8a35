"""A run that continues a thread with LangGraph's `Command(update=..., goto=...)` instead of an
input: the thread's state is changed and the graph runs on from the named nodes, as
LangGraph does. The command reaches the worker as the thread's queued input, under a key only
Signoff writes (the HTTP API, after checking who asks: web/langgraph_api/commanding.py); an
input a person gives with that key is refused, so no one queues a command by typing one."""

from __future__ import annotations

from typing import Any

from checkpoint.errors import InvalidInput

#: The key of a queued input that is a command, not the graph's input.
COMMAND_KEY = "__signoff_command__"


def queued_command(update: dict[str, Any] | None, goto: list[str]) -> dict[str, Any]:
    """The thread's queued input that runs the command."""
    return {COMMAND_KEY: {"update": update or None, "goto": goto or None}}


def graph_input_of(value: Any) -> Any:
    """What the graph is given for a queued input: the Command it stands for, or the input."""
    if isinstance(value, dict) and set(value) == {COMMAND_KEY} and isinstance(value[COMMAND_KEY], dict):
        from langgraph.types import Command

        command = value[COMMAND_KEY]
        goto = command.get("goto") or ()
        return Command(update=command.get("update") or None, goto=goto[0] if len(goto) == 1 else list(goto))
    return value


def refuse_command_key(value: Any, what: str = "--input") -> None:
    """InvalidInput for an input that carries the command key: commands are queued only by
    Signoff, after checking the authority of whoever asks."""
    if isinstance(value, dict) and COMMAND_KEY in value:
        raise InvalidInput(f"{what} may not have the key {COMMAND_KEY!r}: it is Signoff's own; "
                           "move a thread with a run's command.goto/command.update instead")
