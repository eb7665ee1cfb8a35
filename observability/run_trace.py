"""The spans of one run of a thread: the run, a span per node run, a span per model call.

Built from LangChain's callbacks on the run (a handler in the run's config), which LangGraph
calls in the node's own thread as the node and its model calls start and end, so every span
has its real start, end and parent, whichever way the run streams. The model call spans
follow OpenTelemetry's GenAI conventions (gen_ai.*); retries, fallbacks and timeouts are
events on the node's span. Tracing never fails a run: LangChain logs and swallows a
handler's error.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from observability import tracing

_TIMEOUTS = ("APITimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutError", "TimeoutException", "WriteTimeout", "PoolTimeout")


def provider_of(model: str) -> str:
    """gen_ai.provider.name for a Signoff model name (`openai:gpt-4o-mini`, `local`, `local:1.5b`)."""
    if model.startswith("local"):
        return "llama.cpp"
    prefix, sep, _ = model.partition(":")
    return prefix if sep else "openai"


def earlier_attempts(pool: Any, thread_id: str) -> dict[str, int]:
    """How many times each task of the thread was started before (a run that died mid-node
    runs the same task again): from the progress events every run stores."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT event->>'id' AS task, count(*) AS n FROM progress_events "
            "WHERE thread_id = %s AND event->>'event' = 'node_start' GROUP BY 1", (thread_id,)).fetchall()
    return {r["task"]: int(r["n"]) for r in rows if r["task"]}


class RunTrace:
    """One run's span under the thread's trace, and the callback handler that adds the
    node and model call spans under it."""

    def __init__(self, pool: Any, thread_id: str, graph: str) -> None:
        from opentelemetry.trace import set_span_in_context

        self.thread_id, self.graph = thread_id, graph
        self.span = tracing.start_in_thread_trace(pool, thread_id, f"{graph} run",
                                                  attributes={"signoff.thread_id": thread_id, "signoff.graph": graph})
        self.context = set_span_in_context(self.span)
        self.earlier = earlier_attempts(pool, thread_id)

    def handler(self) -> Any:
        return _handler_class()(self)

    def end(self, status: str, error: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("signoff.status", status)
        if error:
            self.span.set_status(Status(StatusCode.ERROR, error[:300]))
        self.span.end()


def _handler_class() -> Any:
    from langchain_core.callbacks import BaseCallbackHandler
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    class Spans(BaseCallbackHandler):
        run_inline = True
        ignore_agent = ignore_retriever = ignore_retry = ignore_custom_event = True

        def __init__(self, run: RunTrace) -> None:
            self.run = run
            self.tracer = tracing.tracer()
            self.root: UUID | None = None
            self.nodes: dict[UUID, Any] = {}  # node run -> its span
            self.parents: dict[UUID, UUID | None] = {}  # other chain runs -> their parent run
            self.calls: dict[UUID, tuple[Any, Any]] = {}  # model call -> (its span, its node's span)
            self.failed: dict[int, str] = {}  # node span id -> the last failed call's error type
            self.mutex = threading.Lock()

        def _common(self) -> dict[str, Any]:
            return {"signoff.thread_id": self.run.thread_id, "signoff.graph": self.run.graph}

        # --- nodes ---------------------------------------------------------------------------

        def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                           tags: list[str] | None = None, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if parent_run_id is None:
                self.root = run_id
                return
            meta = metadata or {}
            node, namespace = meta.get("langgraph_node"), str(meta.get("langgraph_checkpoint_ns") or "")
            if parent_run_id == self.root and node and kwargs.get("name") == node and "|" not in namespace:
                task = namespace.partition(":")[2]
                span = self.tracer.start_span(str(node), context=self.run.context, attributes={
                    **self._common(), "signoff.node": str(node), "signoff.step": int(meta.get("langgraph_step") or 0),
                    "signoff.attempt": 1 + self.run.earlier.get(task, 0), "signoff.task_id": task})
                with self.mutex:
                    self.nodes[run_id] = span
            else:
                with self.mutex:
                    self.parents[run_id] = parent_run_id

        def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
            self._end_chain(run_id, None)

        def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            self._end_chain(run_id, error)

        def _end_chain(self, run_id: UUID, error: BaseException | None) -> None:
            with self.mutex:
                span = self.nodes.pop(run_id, None)
                self.parents.pop(run_id, None)
            if span is None:
                return
            if error is not None and error.__class__.__name__ not in ("GraphInterrupt", "GraphDrained", "GraphBubbleUp"):
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{error.__class__.__name__}: {error}"[:300]))
            self.failed.pop(id(span), None)
            span.end()

        def _node_span(self, run_id: UUID | None) -> Any:
            with self.mutex:
                for _ in range(50):  # a node's model call sits a few runs below the node
                    if run_id is None:
                        return None
                    if run_id in self.nodes:
                        return self.nodes[run_id]
                    run_id = self.parents.get(run_id)
            return None

        # --- model calls ---------------------------------------------------------------------

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                                metadata: dict[str, Any] | None = None, invocation_params: dict[str, Any] | None = None,
                                **kwargs: Any) -> None:
            meta, params = metadata or {}, invocation_params or {}
            model = str(meta.get("signoff_model") or params.get("model") or params.get("model_name") or "unknown")
            requested = str(params.get("model") or params.get("model_name") or model)
            node_span = self._node_span(parent_run_id)
            attempt = int(meta.get("signoff_attempt") or 1)
            if node_span is not None:
                event = {"gen_ai.request.model": requested, "signoff.model": model, "signoff.attempt": attempt}
                if last := self.failed.get(id(node_span)):
                    event["error.type"] = last
                if attempt > 1:
                    node_span.add_event("retry", event)
                elif meta.get("signoff_fallback"):
                    node_span.add_event("fallback", event)
            span = self.tracer.start_span(f"chat {requested}", kind=SpanKind.CLIENT,
                                          context=set_span_in_context(node_span) if node_span is not None else self.run.context,
                                          attributes={**self._common(), "gen_ai.operation.name": "chat",
                                                      "gen_ai.provider.name": provider_of(model), "gen_ai.request.model": requested,
                                                      "signoff.model": model, "signoff.attempt": attempt,
                                                      **({"signoff.node": str(meta["langgraph_node"])} if meta.get("langgraph_node") else {})})
            with self.mutex:
                self.calls[run_id] = (span, node_span)

        def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
            with self.mutex:
                span, _ = self.calls.pop(run_id, (None, None))
            if span is None:
                return
            usage, answered, finish = _usage(response)
            if usage:
                span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens") or 0))
                span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens") or 0))
            if answered:
                span.set_attribute("gen_ai.response.model", answered)
            if finish:
                span.set_attribute("gen_ai.response.finish_reasons", [finish])
            span.end()

        def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            with self.mutex:
                span, node_span = self.calls.pop(run_id, (None, None))
            if span is None:
                return
            cause = _client_error(error)
            kind = cause.__class__.__name__
            span.set_attribute("error.type", kind)
            span.record_exception(cause)
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {str(cause).splitlines()[0] if str(cause) else ''}"[:300]))
            if kind in _TIMEOUTS or isinstance(cause, TimeoutError):
                span.add_event("timeout")
                if node_span is not None:
                    node_span.add_event("timeout", {"signoff.model": str(span.attributes.get("signoff.model", ""))})
            if node_span is not None:
                self.failed[id(node_span)] = kind
            span.end()

    return Spans


def _client_error(error: BaseException) -> BaseException:
    """The model client's own error (openai.APITimeoutError, openai.InternalServerError...),
    not the wrapper LangChain raises it in."""
    seen = 0
    while error.__class__.__module__.startswith("langchain") and error.__cause__ is not None and seen < 5:
        error, seen = error.__cause__, seen + 1
    return error


def _usage(response: Any) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(token usage, model that answered, finish reason) of a chat model's result."""
    usage = answered = finish = None
    try:
        generation = response.generations[0][0]
        message = getattr(generation, "message", None)
        usage = getattr(message, "usage_metadata", None)
        metadata = getattr(message, "response_metadata", None) or {}
        answered = metadata.get("model_name") or metadata.get("model")
        finish = metadata.get("finish_reason") or (generation.generation_info or {}).get("finish_reason")
    except (IndexError, AttributeError, TypeError):
        pass
    return usage, answered, finish
