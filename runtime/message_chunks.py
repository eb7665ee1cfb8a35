"""A chat model's streamed chunks as a run's `token` progress events, and back.

A worker already writes every token of a project graph's model calls as a progress event
(`signoff watch` shows them); the event also says which message it is a chunk of, so
`signoff serve` can send the chunks to LangGraph's clients as `messages` events while the
model types, from whichever worker runs the thread, and leave out the whole message the
checkpoint holds afterwards (LangGraph's clients join chunks by message id).

Each token is one more row for every run, watched or not, so a chunk names its message by a
number the run gives it (`m`); the message's id, step and LangGraph's run metadata
(langgraph_node, langgraph_step, ...) come once, with its first chunk (about 500 bytes).
Measured against a plain token event: 0.7 us and 6 bytes more per token."""

from __future__ import annotations

from typing import Any

#: what a chunk carries besides its text that a client shows while the model types, kept when
#: set; the rest (response and usage metadata) comes with the whole message, in the state
_EXTRAS = ("tool_call_chunks", "name")


def chunk_event(chunk: Any, metadata: dict[str, Any], numbers: dict[str, int]) -> dict[str, Any] | None:
    """The `token` event of a streamed AIMessageChunk (None for one with nothing to show);
    `numbers`: the run's streamed messages, by id, numbered in the order they began."""
    text = chunk.content if isinstance(chunk.content, str) else ""
    extras = {key: value for key in _EXTRAS if (value := getattr(chunk, key, None))}
    if not isinstance(chunk.content, str):
        extras["content"] = chunk.content
    if not text and not extras.get("tool_call_chunks") and "content" not in extras:
        return None  # a role or finish marker: nothing a reader joins
    event: dict[str, Any] = {"event": "token", "node": metadata.get("langgraph_node", "?"), "text": text}
    number = numbers.get(chunk.id)
    if number is None:
        number = numbers[chunk.id] = len(numbers)
        event.update(message_id=chunk.id, step=metadata.get("langgraph_step"),
                     metadata={k: v for k, v in metadata.items() if not k.startswith("__")})
    event["m"] = number
    if extras:
        event["chunk"] = extras
    return event


def is_chunk(event: dict[str, Any]) -> bool:
    return event.get("event") == "token" and "m" in event


class Messages:
    """What a reader knows of the run's streamed messages: the first chunk of each says which."""

    def __init__(self) -> None:
        self._by_number: dict[int, tuple[str, Any, dict[str, Any]]] = {}

    def read(self, event: dict[str, Any]) -> tuple[str, Any, dict[str, Any]] | None:
        """(message id, step, LangGraph's metadata) of a chunk event; None if its message's
        first chunk was never written (its worker failed to write it)."""
        if event.get("message_id") is not None:  # a first chunk (a worker that took over numbers its own from 0)
            metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
            self._by_number[event["m"]] = (event["message_id"], event.get("step"), metadata or
                                           {"langgraph_node": event.get("node"), "langgraph_step": event.get("step")})
        return self._by_number.get(event["m"])


def as_message(event: dict[str, Any], message_id: str) -> Any:
    """The AIMessageChunk a `token` event was written from."""
    from langchain_core.messages import AIMessageChunk

    fields = {"content": event.get("text") or "", **(event.get("chunk") or {})}
    return AIMessageChunk(id=message_id, **fields)
