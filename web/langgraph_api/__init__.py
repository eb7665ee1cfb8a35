"""LangGraph's HTTP API, served by `signoff serve` under /langgraph, so the clients LangGraph
users have (the `langgraph-sdk` package, Studio, Agent Chat UI, Agent Inbox) work against
Signoff: assistants, threads, runs, streaming and interrupts, with reviewer tokens, decisions
and the audit as everywhere else."""

from __future__ import annotations

from starlette.routing import Mount

PREFIX = "/langgraph"


def mount() -> Mount:
    from web.langgraph_api import assistants, run_routes, threads

    from web.langgraph_api.http import unknown_route

    served = [*assistants.routes(), *threads.routes(), *run_routes.routes()]
    return Mount(PREFIX, routes=[*served, unknown_route(served)])
