"""`signoff start GRAPH --input JSON` for any graph: the input checked against the graph's
input schema, the context and interrupt points checked against the graph, all before anything
is stored; then run here or handed to a worker, like the built-in graphs' threads."""

from __future__ import annotations

import json
import functools
import typing
from typing import Any

from checkpoint.errors import InvalidInput
from checkpoint.settings import MAX_INPUT_BYTES


def json_object(text: str, flag: str) -> dict[str, Any]:
    if len(text.encode("utf-8", "replace")) > MAX_INPUT_BYTES:
        raise InvalidInput(f"{flag} is over the {MAX_INPUT_BYTES}-byte limit: shorten it")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{flag} is not JSON ({exc.msg} at column {exc.colno}): pass a JSON object like '{{\"key\": \"value\"}}'") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{flag} must be a JSON object, not {type(value).__name__}: like '{{\"key\": \"value\"}}'")
    return value


def check_input(name: str, graph: Any, value: dict[str, Any]) -> None:
    """The input's keys are the graph's input keys and each value has its declared type
    (pydantic, as LangGraph's own schemas; a pydantic input model validates whole). Message
    lists are left to LangGraph, which accepts dicts, tuples and strings for them."""
    from pydantic import BaseModel, ValidationError

    from runtime.commanded import refuse_command_key

    refuse_command_key(value)
    schema = getattr(getattr(graph, "builder", None), "input_schema", None)
    if schema is None:
        return
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema.model_validate(value)
            return
        hints = typing.get_type_hints(schema)
    except ValidationError as exc:
        raise InvalidInput(f"--input does not fit graph {name}'s input: {_first_error(exc)}") from None
    except (TypeError, NameError):
        return  # an input type pydantic cannot read: LangGraph checks it when the run starts
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise InvalidInput(f"--input has {unknown[0]!r}, which graph {name}'s input does not have: it takes {', '.join(hints) or 'nothing'}")
    for key, item in value.items():
        if "Message" in repr(hints[key]):
            continue
        try:
            validator(hints[key]).validate_python(item)
        except ValidationError as exc:
            raise InvalidInput(f"--input {key}: {_first_error(exc)}") from None
        except Exception:  # noqa: BLE001 - a type pydantic cannot check: LangGraph checks it at the run
            continue


def validator(tp: Any) -> Any:
    """pydantic's validator of an input type, built once per type: building one costs far more
    than validating a value with it, and every thread started over the API checks its input."""
    try:
        return _validator(tp)
    except TypeError:  # an unhashable annotation: built for this check alone
        from pydantic import TypeAdapter

        return TypeAdapter(tp)


@functools.lru_cache(maxsize=256)
def _validator(tp: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def _first_error(exc: Any) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc") or ())
    return f"{where + ': ' if where else ''}{error.get('msg', 'invalid')}"


def input_keys(graph: Any) -> list[str]:
    schema = getattr(getattr(graph, "builder", None), "input_schema", None)
    try:
        fields = getattr(schema, "model_fields", None)
        return list(fields) if fields is not None else list(typing.get_type_hints(schema))
    except Exception:  # noqa: BLE001
        return []


def summary_of(value: dict[str, Any]) -> str:
    """The first text in the input (a request, a question), else the input as JSON; nothing
    for a queued command.goto/update, which leaves the thread's summary as it was."""
    from runtime.commanded import COMMAND_KEY

    if COMMAND_KEY in value:
        return ""
    for item in value.values():
        if isinstance(item, str) and item.strip():
            return item.strip()
    return json.dumps(value, ensure_ascii=False, default=str)[:200]


def run_options(name: str, graph: Any, context: dict[str, Any] | None, before: list[str], after: list[str]) -> dict[str, Any]:
    nodes = [n for n in graph.nodes if not n.startswith("__")]
    for flag, names in (("--interrupt-before", before), ("--interrupt-after", after)):
        for node in names:
            if node != "*" and node not in nodes:
                raise InvalidInput(f"{flag} {node!r}: graph {name} has no such node (it has {', '.join(nodes)})")
    options: dict[str, Any] = {}
    if context is not None:
        options["context"] = context
    if before:
        options["interrupt_before"] = "*" if "*" in before else list(before)
    if after:
        options["interrupt_after"] = "*" if "*" in after else list(after)
    return options


#: configurable keys Signoff sets itself for every run: a run's config never replaces them
OWN_CONFIGURABLE = ("thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "checkpoint_during", "run_id",
                    "user_id", "langgraph_auth_user", "langgraph_auth_user_id", "langgraph_auth_permissions")


def run_config_options(config: dict[str, Any] | None) -> dict[str, Any]:
    """What of a run's `config` the graph is given: its configurable values but Signoff's own
    keys and LangGraph's internal ones (`__...`), its tags, its recursion limit. They are data
    for the graph's nodes only: who acts and what a gate decides never come from them."""
    config = config or {}
    options: dict[str, Any] = {}
    configurable = config.get("configurable")
    if configurable is not None and not isinstance(configurable, dict):
        raise InvalidInput("config.configurable must be an object")
    kept = {k: v for k, v in (configurable or {}).items() if k not in OWN_CONFIGURABLE and not k.startswith("__")}
    if kept:
        options["configurable"] = kept
    tags = config.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise InvalidInput("config.tags must be a list of strings")
    if tags:
        options["tags"] = tags
    limit = config.get("recursion_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000):
        raise InvalidInput("config.recursion_limit must be a whole number from 1 to 10000")
    if limit is not None:
        options["recursion_limit"] = limit
    return options


def start_any(config: Any, name: str, input_text: str, context_text: str | None, before: list[str], after: list[str],
              thread_id: str, deadline_hours: float, *, detach: bool = False, deadline_given: bool = False) -> None:
    from checkpoint import jobs, threads
    from checkpoint.threads import ThreadExists
    from runtime.handoff import worker_available
    from runtime.running import follow_queued, run_and_report
    from runtime.session import make_context, open_db
    from console.terminal import out
    from runtime.registry import get_entry
    from runtime.runner import InterruptRunner
    from runtime.versions import version_of

    entry = get_entry(name)
    if not deadline_given and entry.spec is not None and entry.spec.deadline_hours != 24.0:
        deadline_hours = entry.spec.deadline_hours  # the graph's entry in langgraph.json declares it
    if entry.builtin:
        raise InvalidInput(f"{name} takes its text, not --input: signoff start {name} TEXT")
    graph_input = json_object(input_text, "--input")
    check_input(name, entry.graph, graph_input)
    context = json_object(context_text, "--context") if context_text is not None else None
    options = run_options(name, entry.graph, context, before, after)
    summary = summary_of(graph_input)
    with open_db(config) as pool:
        from checkpoint.identity import cli_identity

        actor = cli_identity(pool).name  # the requester: who runs this command, never a typed name
        worker = worker_available(pool)
        if detach or worker:
            jobs.submit(pool, thread_id, name, summary, graph_input=graph_input, deadline_hours=deadline_hours, actor=actor,
                        graph_version=version_of(entry), run_options=options)
            follow_queued(pool, thread_id, worker=worker, detach=detach)
            return
        runner = InterruptRunner(pool, entry, make_context(config, pool, eager=False))
        if threads.get(pool, thread_id) is not None:
            raise ThreadExists(f"thread {thread_id} already exists: pick another --thread id, or `signoff show {thread_id}`")
        out.print(f"thread [bold]{thread_id}[/bold]")
        run_and_report(thread_id, lambda sink, control: runner.start_thread(
            thread_id, graph_input, options, summary, deadline_hours=deadline_hours, actor=actor, sink=sink, control=control))
