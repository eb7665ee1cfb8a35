"""LangGraph's async path for a graph with async nodes, behind the same stream of (mode,
payload) the sync path gives, so ThreadRunner's run loop is one for every graph."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Iterator


def async_stream(runner: Any, graph_input: Any, options: dict[str, Any]) -> Iterator[Any]:
    """LangGraph's async path (astream, AsyncPostgresSaver on a connection of its own) in a
    thread of its own, its stream handed over as it comes, so the caller's loop is the same
    for every graph. Errors (a drain, a failed node) are raised here, as the sync stream would."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    async def run() -> None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        tag = (getattr(runner.pool, "kwargs", None) or {}).get("application_name")
        async with await AsyncConnection.connect(runner.pool.conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                                                 **({"application_name": tag} if tag else {})) as conn:
            graph = runner.graph.copy(update={"checkpointer": AsyncPostgresSaver(conn)})
            async for item in graph.astream(graph_input, **options):
                items.put(("item", item))

    def pump() -> None:
        try:
            asyncio.run(run())
            items.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            items.put(("error", exc))

    threading.Thread(target=pump, name="signoff-async-run", daemon=True).start()
    while True:
        kind, payload = items.get()
        if kind == "item":
            yield payload
        elif kind == "done":
            return
        else:
            raise payload
