"""ResilientAgentNode: the one wrapper every model-calling node goes through.

Primary model with exponential backoff and jitter, then the fallback model, then a structured
error in state (`needs_human`, `error`) instead of an exception that kills the run.

Why by hand (with tenacity) rather than LangGraph's RetryPolicy or Runnable.with_retry:
RetryPolicy re-runs the whole node and, once exhausted, raises; it cannot switch to a fallback
model mid-node nor turn the failure into state. with_retry/with_fallbacks cannot honour a
429's Retry-After and do not report attempts per model. The per-call timeout is the HTTP
client's own (ChatOpenAI(timeout=...)), which really cancels the socket read; LangGraph's
node timeout only applies to async nodes.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import httpx
import openai
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from typing_extensions import TypedDict

from nodes.models import ModelHandle, ModelRegistry, SchemaError, parse_structured

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class ResiliencePolicy:
    """How hard to try one model before moving on."""

    max_attempts: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    retry_after_cap: float = 30.0


class RetryRecord(TypedDict):
    model: str
    attempt: int
    error: str
    wait: float


class CallRecord(TypedDict):
    """One logical model call as the CLI and the audit show it."""

    node: str
    model: str | None
    attempts: int
    fallback_used: bool
    latency_ms: int
    #: None when the server reports no usage (llama.cpp sends none when streaming)
    input_tokens: int | None
    output_tokens: int | None
    retries: list[RetryRecord]
    error: str | None


@dataclass(frozen=True)
class AgentResult:
    message: AIMessage | None
    parsed: BaseModel | None
    record: CallRecord

    @property
    def ok(self) -> bool:
        return self.message is not None

    @property
    def text(self) -> str:
        if self.message is None:
            return ""
        content = self.message.content
        return content if isinstance(content, str) else str(content)

    @property
    def cut_off(self) -> bool:
        """The server stopped the answer at its token limit (finish_reason "length")."""
        return self.message is not None and (self.message.response_metadata or {}).get("finish_reason") == "length"


class ModelLimiter:
    """At most N calls in flight per model, shared by every thread of one process (a worker
    running hundreds of threads must not open hundreds of calls to one provider). A call
    waits for a slot only while it talks to the model: retry back-off (Retry-After included)
    sleeps outside the slot, so a rate-limited model's slots serve other threads meanwhile.

    `limit` applies to every model when given (SIGNOFF_MODEL_CONCURRENCY); otherwise the
    local llama.cpp server gets 2 (it answers one request at a time per slot on 2 cores, so
    more only queues inside it) and a remote model 16."""

    LOCAL_DEFAULT = 2
    REMOTE_DEFAULT = 16

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._mutex = threading.Lock()
        self.peak: dict[str, int] = {}
        self._busy: dict[str, int] = {}

    def limit_for(self, model: str) -> int:
        if self.limit is not None:
            return self.limit
        return self.LOCAL_DEFAULT if model.startswith("local") else self.REMOTE_DEFAULT

    @contextmanager
    def slot(self, model: str) -> Iterator[None]:
        with self._mutex:
            semaphore = self._slots.get(model) or self._slots.setdefault(model, threading.BoundedSemaphore(self.limit_for(model)))
        with semaphore:
            with self._mutex:
                self._busy[model] = self._busy.get(model, 0) + 1
                self.peak[model] = max(self.peak.get(model, 0), self._busy[model])
            try:
                yield
            finally:
                with self._mutex:
                    self._busy[model] -= 1


@contextmanager
def _no_limit(model: str) -> Iterator[None]:
    yield


_TRANSIENT_STATUS = {408, 409, 429}


def is_transient(exc: BaseException) -> bool:
    """Worth retrying on the same model: rate limits, 5xx, timeouts, dropped connections,
    unparseable responses and answers that fail their schema. 400/401/403/404 are not."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    if type(exc) is ValueError and str(exc).startswith("No generation"):
        # A streamed answer with no SSE events (e.g. a malformed body): langchain-core raises
        # a bare ValueError ("No generations found in stream." / "No generation chunks were
        # returned"), where the non-streamed path raises json.JSONDecodeError.
        return True
    return isinstance(
        exc,
        (
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.APIResponseValidationError,
            openai.LengthFinishReasonError,  # structured answer cut off at max_tokens
            httpx.TransportError,
            TimeoutError,
            ConnectionError,
            SchemaError,
            json.JSONDecodeError,  # a malformed response body
            OutputParserException,
        ),
    )


def describe_error(exc: BaseException) -> str:
    """One line: the class and the gist, never a request body or a secret."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} ({exc.__class__.__name__})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text[:200]}" if text else exc.__class__.__name__


def retry_after_seconds(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _WaitHonouringRetryAfter:
    """Exponential backoff with jitter, unless the server said how long to wait (capped)."""

    def __init__(self, policy: ResiliencePolicy) -> None:
        self.policy = policy
        self.backoff = wait_exponential_jitter(multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff)

    def __call__(self, state: RetryCallState) -> float:
        hinted = retry_after_seconds(state.outcome.exception() if state.outcome else None)
        if hinted is not None:
            return min(hinted, self.policy.retry_after_cap)
        return self.backoff(state)


def call_model(
    node: str,
    messages: Sequence[BaseMessage],
    models: ModelRegistry,
    policy: ResiliencePolicy,
    *,
    schema: type[BaseModel] | None = None,
    stream_tokens: bool = True,
    emit: Callable[[dict[str, Any]], None] = lambda event: None,
    limiter: ModelLimiter | None = None,
) -> AgentResult:
    """Try each model in turn with retries; never raises for model failures."""
    slot = limiter.slot if limiter is not None else _no_limit
    started = time.monotonic()
    retries: list[RetryRecord] = []
    attempts = 0
    last_error: BaseException | None = None
    tags = [] if stream_tokens and schema is None else [TAG_NOSTREAM]

    for index, handle in enumerate(models.chain()):
        if index > 0:
            emit({"event": "fallback", "node": node, "model": handle.name, "error": describe_error(last_error) if last_error else ""})

        def note_retry(state: RetryCallState, handle: ModelHandle = handle) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            record = RetryRecord(model=handle.name, attempt=state.attempt_number, error=describe_error(exc) if exc else "", wait=round(wait, 3))
            retries.append(record)
            emit({"event": "retry", "node": node, **record})

        retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=_WaitHonouringRetryAfter(policy),
            retry=retry_if_exception(is_transient),
            before_sleep=note_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    with slot(handle.name):
                        # the attempt and fallback in the metadata are for traces (observability/run_trace.py)
                        metadata = {"signoff_model": handle.name, "signoff_attempt": attempt.retry_state.attempt_number, "signoff_fallback": index > 0}
                        message = handle.bound(schema, stream=not tags).invoke(list(messages), config={"tags": tags, "metadata": metadata})
                    parsed = parse_structured(message, schema) if schema is not None else None
        except Exception as exc:  # every model failure becomes state, by design
            last_error = exc
            emit({"event": "model_failed", "node": node, "model": handle.name, "error": describe_error(exc)})  # for metrics: its last attempt failed
            continue
        usage = message.usage_metadata
        return AgentResult(
            message=message,
            parsed=parsed,
            record=CallRecord(
                node=node, model=handle.name, attempts=attempts, fallback_used=index > 0,
                latency_ms=int((time.monotonic() - started) * 1000),
                input_tokens=usage.get("input_tokens") if usage else None,
                output_tokens=usage.get("output_tokens") if usage else None,
                retries=retries, error=None,
            ),
        )

    error = describe_error(last_error) if last_error else "no model configured"
    return AgentResult(
        message=None,
        parsed=None,
        record=CallRecord(
            node=node, model=None, attempts=attempts, fallback_used=models.fallback is not None,
            latency_ms=int((time.monotonic() - started) * 1000), input_tokens=None, output_tokens=None,
            retries=retries, error=error,
        ),
    )


def emitter(runtime: Runtime[Any]) -> Callable[[dict[str, Any]], None]:
    """Where a node sends its own progress events: the run's `emit` (SignoffContext.emit) if
    it set one, else LangGraph's custom stream."""
    emit = getattr(runtime.context, "emit", None)
    return emit if emit is not None else runtime.stream_writer


class ResilientAgentNode(Generic[StateT]):
    """A graph node that builds a prompt from state, calls the models resiliently, and turns
    the answer (or the failure) into a state update.

    `prompt(state)` returns the messages; `on_success(state, result)` returns the update.
    On failure the update is `{"needs_human": True, "error": ...}` plus `on_failure(state, result)`.
    Either way the call record is appended to `calls`.

    `models(context)` picks the registry to call: the context's `models` unless given (the
    writing graphs' reviewer passes `SignoffContext.reviewer`, so it can run on its own model).
    """

    def __init__(
        self,
        name: str,
        prompt: Callable[[StateT], Sequence[BaseMessage]],
        on_success: Callable[[StateT, AgentResult], dict[str, Any]],
        *,
        schema: type[BaseModel] | None = None,
        on_failure: Callable[[StateT, AgentResult], dict[str, Any]] | None = None,
        stream_tokens: bool = True,
        models: Callable[[Any], ModelRegistry] | None = None,
    ) -> None:
        self.name = name
        self.models = models
        self.prompt = prompt
        self.on_success = on_success
        self.on_failure = on_failure
        self.schema = schema
        self.stream_tokens = stream_tokens
        self.__name__ = name  # LangGraph names nodes after their callable

    def __call__(self, state: StateT, runtime: Runtime[Any]) -> dict[str, Any]:
        context = runtime.context
        result = call_model(
            self.name,
            self.prompt(state),
            self.models(context) if self.models is not None else context.models,
            context.policy,
            schema=self.schema,
            stream_tokens=self.stream_tokens,
            emit=emitter(runtime),
            limiter=getattr(context, "model_limiter", None),
        )
        if result.ok:
            update = self.on_success(state, result)
        else:
            update = {"needs_human": True, "error": f"{self.name}: {result.record['error']}"}
            if self.on_failure is not None:
                update.update(self.on_failure(state, result))
        update["calls"] = [result.record]
        return update
