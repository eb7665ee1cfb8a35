"""Assistants: one per graph of the project's langgraph.json, as LangGraph's server makes
them (its id is uuid5 of the graph's name in LangGraph's namespace, so ids match the ones a
client got from `langgraph dev`); the graph's name is accepted wherever an id is. Signoff's
own graphs (support, revision, research) are started with `signoff start`, not listed here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid5

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from checkpoint.tokens import Reviewer
from web.decide import HttpError
from web.langgraph_api.http import run_in_threadpool, Json, body_of, field, paging, route

#: LangGraph's server derives an assistant's id from its graph's name in this namespace.
NAMESPACE_GRAPH = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
#: when the assistants of this process were made (they change only with a restart)
LOADED_AT = datetime.now(timezone.utc)


def assistant_id(graph: str) -> str:
    return str(uuid5(NAMESPACE_GRAPH, graph))


def project_graphs() -> list[Any]:
    """The project's graphs that load here (a broken one is reported by `signoff graphs`)."""
    from runtime.registry import entries

    return [e for e in entries() if not e.builtin and e.graph is not None]


#: assistant id or graph name -> (the project it was found in, its entry): every run asks
#: twice, and listing the project's graphs builds each one's entry again
_found: dict[str, tuple[Any, Any]] = {}


def entry_for(assistant: str) -> Any:
    """The graph an assistant id (or a graph's name) names; 404 otherwise. Found once per
    project read: a project's graphs are loaded once and kept (runtime/project.py)."""
    from runtime.project import current_project

    project = current_project()
    held = _found.get(assistant)
    if held is not None and held[0] is project:
        return held[1]
    for entry in project_graphs():
        if assistant in (entry.name, assistant_id(entry.name)):
            _found[assistant] = (project, entry)
            return entry
    raise HttpError(404, f"no assistant {assistant!r}: list them with assistants.search()")


def as_assistant(entry: Any) -> dict[str, Any]:
    from runtime.project import current_project

    project = current_project()
    description = None
    if project.path is not None:
        import json

        try:
            raw = json.loads(project.path.read_text(encoding="utf-8"))["graphs"].get(entry.name)
            description = raw.get("description") if isinstance(raw, dict) else None
        except (OSError, ValueError, KeyError, AttributeError):
            description = None
    return {"assistant_id": assistant_id(entry.name), "graph_id": entry.name, "name": entry.name, "description": description,
            "config": {}, "context": {}, "metadata": {"created_by": "system"}, "version": 1,
            "created_at": LOADED_AT, "updated_at": LOADED_AT}


async def search(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    limit, offset = paging(body)
    graph_id, name = field(body, "graph_id", str), field(body, "name", str)
    metadata = field(body, "metadata", dict) or {}
    found = [as_assistant(e) for e in await run_in_threadpool(project_graphs)]
    found = [a for a in found if (graph_id is None or a["graph_id"] == graph_id) and (name is None or name.lower() in a["name"].lower())
             and all(a["metadata"].get(k) == v for k, v in metadata.items())]
    return Json(found[offset:offset + limit])


async def count(request: Request, reviewer: Reviewer) -> Response:
    body = await body_of(request)
    graph_id = field(body, "graph_id", str)
    return Json(len([e for e in await run_in_threadpool(project_graphs) if graph_id is None or e.name == graph_id]))


async def get(request: Request, reviewer: Reviewer) -> Response:
    return Json(as_assistant(await run_in_threadpool(entry_for, request.path_params["assistant_id"])))


async def graph(request: Request, reviewer: Reviewer) -> Response:
    entry = await run_in_threadpool(entry_for, request.path_params["assistant_id"])
    xray = request.query_params.get("xray", "false").lower()
    depth: bool | int = True if xray == "true" else int(xray) if xray.isdigit() else False
    drawn = entry.graph.get_graph(xray=depth)
    return Json(drawn.to_json())


def schemas_of(name: str, graph: Any) -> dict[str, Any]:
    """The JSON schemas of a graph's input, output, state, config and context."""

    def schema(make: Any) -> Any:
        try:
            return make()
        except Exception:  # noqa: BLE001 - a type with no JSON schema: LangGraph says null too
            return None

    return {"graph_id": name, "input_schema": schema(lambda: graph.get_input_jsonschema()),
            "output_schema": schema(lambda: graph.get_output_jsonschema()),
            "state_schema": schema(lambda: graph.get_output_jsonschema() if not hasattr(graph, "builder")
                                   else _state_schema(graph)),
            "config_schema": schema(lambda: graph.get_config_jsonschema()),
            "context_schema": schema(lambda: graph.get_context_jsonschema())}


def _state_schema(graph: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(graph.builder.state_schema).json_schema()


async def schemas(request: Request, reviewer: Reviewer) -> Response:
    entry = await run_in_threadpool(entry_for, request.path_params["assistant_id"])
    return Json(await run_in_threadpool(schemas_of, entry.name, entry.graph))


async def subgraphs(request: Request, reviewer: Reviewer) -> Response:
    entry = await run_in_threadpool(entry_for, request.path_params["assistant_id"])
    namespace = request.path_params.get("namespace")
    found = {}
    for ns, sub in entry.graph.get_subgraphs(namespace=namespace, recurse=request.query_params.get("recurse") == "true"):
        found[ns] = schemas_of(entry.name, sub)
    return Json(found)


def routes() -> list[Route]:
    return [
        Route("/assistants/search", route(search), methods=["POST"]),
        Route("/assistants/count", route(count), methods=["POST"]),
        Route("/assistants/{assistant_id}", route(get), methods=["GET"]),
        Route("/assistants/{assistant_id}/graph", route(graph), methods=["GET"]),
        Route("/assistants/{assistant_id}/schemas", route(schemas), methods=["GET"]),
        Route("/assistants/{assistant_id}/subgraphs", route(subgraphs), methods=["GET"]),
        Route("/assistants/{assistant_id}/subgraphs/{namespace}", route(subgraphs), methods=["GET"]),
    ]
