"""A chat model's streamed chunks as a run's `token` progress events, and back.

A worker already writes every token of a project graph's model calls as a progress event
(`signoff watch` shows them); the event also names the message it belongs to and the step
that wrote it, so `signoff serve` can send the chunks to LangGraph's clients as `messages`
events while the model types, from whichever worker runs the thread, and leave out the whole
message the checkpoint holds afterwards (LangGraph's clients join chunks by message id).
LangGraph's run metadata (langgraph_node, langgraph_step, ...) comes once per message, with
its first chunk, not with every token."""

from __future__ import annotations

from typing import Any

#: what a chunk carries besides its text, kept when set (tool calls streamed, say)
_EXTRAS = ("tool_call_chunks", "additional_kwargs", "response_metadata", "usage_metadata", "name")


def chunk_event(chunk: Any, metadata: dict[str, Any], announced: set[str]) -> dict[str, Any] | None:
    """The `token` event of a streamed AIMessageChunk (None for one with nothing to show);
    `announced`: the run's message ids whose metadata was already written."""
    text = chunk.content if isinstance(chunk.content, str) else ""
    extras = {key: value for key in _EXTRAS if (value := getattr(chunk, key, None))}
    if not isinstance(chunk.content, str):
        extras["content"] = chunk.content
    if not text and not extras.get("tool_call_chunks") and "content" not in extras:
        return None  # a role or finish marker: nothing a reader joins
    event: dict[str, Any] = {"event": "token", "node": metadata.get("langgraph_node", "?"), "text": text,
                             "message_id": chunk.id, "step": metadata.get("langgraph_step")}
    if extras:
        event["chunk"] = extras
    if chunk.id not in announced:
        announced.add(chunk.id)
        event["metadata"] = {k: v for k, v in metadata.items() if not k.startswith("__")}
    return event


def is_chunk(event: dict[str, Any]) -> bool:
    return event.get("event") == "token" and event.get("message_id") is not None


def as_message(event: dict[str, Any]) -> Any:
    """The AIMessageChunk a `token` event was written from."""
    from langchain_core.messages import AIMessageChunk

    fields = {"content": event.get("text") or "", **(event.get("chunk") or {})}
    return AIMessageChunk(id=event["message_id"], **fields)
