"""Retry, timeout and fallback through the real langchain-openai client against a local
OpenAI-compatible server that injects faults (tests/fault_server.py)."""

from __future__ import annotations

import dataclasses
import operator
from typing import Annotated, Any, Iterator

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from nodes.context import SignoffContext
from nodes.models import ModelHandle, ModelRegistry
from nodes.resilient import AgentResult, CallRecord, ResiliencePolicy, ResilientAgentNode, call_model
from tests.fault_server import FaultServer, drop, hang, malformed, ok, status

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 0.5
FAST = ResiliencePolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, retry_after_cap=2.0)
PROMPT = [HumanMessage("Is the invoice paid?")]


class Verdict(BaseModel):
    answer: str
    confidence: float


def openai_handle(server: FaultServer, model: str, *, streaming: bool = False) -> ModelHandle:
    # As nodes/models.py builds it; `streaming=True` forces SSE outside a graph. (Passing
    # streaming=False would be different from leaving it unset: it disables streaming even
    # in a LangGraph "messages" run.)
    chat = ChatOpenAI(
        base_url=server.base_url, api_key="test", model=model,  # type: ignore[arg-type]
        timeout=TIMEOUT, max_retries=0, stream_usage=True, **({"streaming": True} if streaming else {}),
    )
    return ModelHandle(name=f"openai:{model}", chat=chat, structured_mode="json_schema")


@pytest.fixture
def primary() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def fallback() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def models(primary: FaultServer, fallback: FaultServer) -> ModelRegistry:
    return ModelRegistry(primary=openai_handle(primary, "primary-model"), fallback=openai_handle(fallback, "fallback-model"))


@pytest.fixture
def solo(primary: FaultServer) -> ModelRegistry:
    """The primary alone, so a failure shows as the call's error, not as a fallback."""
    return ModelRegistry(primary=openai_handle(primary, "primary-model"))


def call(models: ModelRegistry, policy: ResiliencePolicy = FAST, events: list[dict] | None = None, **kwargs: Any) -> AgentResult:
    return call_model("node", PROMPT, models, policy, emit=(events.append if events is not None else lambda e: None), **kwargs)


def assert_answered_by_primary_after_one_retry(result: AgentResult, primary: FaultServer, fallback: FaultServer, error: str) -> None:
    assert result.ok, result.record
    assert result.record["model"] == "openai:primary-model"
    assert result.record["attempts"] == 2
    assert result.record["fallback_used"] is False
    assert result.record["error"] is None
    [retry] = result.record["retries"]
    assert (retry["model"], retry["attempt"]) == ("openai:primary-model", 1)
    assert error in retry["error"]
    assert primary.request_count == 2
    assert fallback.request_count == 0


# -- transient faults: retried on the same model ---------------------------------------------------


def test_429_with_retry_after_is_honoured_then_succeeds(models, primary, fallback):
    primary.script(status(429, retry_after=1), ok("Paid on 3 March.", prompt_tokens=12, completion_tokens=5))
    result = call(models)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "HTTP 429")
    assert result.record["retries"][0]["wait"] == 1.0
    assert result.record["latency_ms"] >= 1000, "the wait was slept, not only recorded"
    assert result.text == "Paid on 3 March."
    assert (result.record["input_tokens"], result.record["output_tokens"]) == (12, 5)


def test_retry_after_longer_than_the_cap_is_capped(models, primary, fallback):
    primary.script(status(429, retry_after=120), ok("Paid."))
    result = call(models, dataclasses.replace(FAST, retry_after_cap=0.2))
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "HTTP 429")
    assert result.record["retries"][0]["wait"] == 0.2


def test_500_then_ok_is_retried_with_backoff(models, primary, fallback):
    primary.script(status(500), ok("Paid."))
    result = call(models)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "HTTP 500")
    assert 0 < result.record["retries"][0]["wait"] <= FAST.max_backoff


def test_hang_past_the_timeout_is_retried(models, primary, fallback):
    primary.script(hang(5), ok("Paid."))
    result = call(models)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "TimeoutError")
    assert result.record["latency_ms"] < 5000, "the client timeout cut the hang short"


def test_dropped_connection_is_retried(models, primary, fallback):
    primary.script(drop(), ok("Paid."))
    result = call(models)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "ConnectionError")


def test_malformed_json_body_is_retried(models, primary, fallback):
    primary.script(malformed(), ok("Paid."))
    result = call(models)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "JSONDecodeError")
    assert result.text == "Paid."


def test_malformed_body_of_a_streamed_call_is_retried(primary, fallback):
    streaming = ModelRegistry(primary=openai_handle(primary, "primary-model", streaming=True), fallback=openai_handle(fallback, "fallback-model"))
    primary.script(malformed(), ok("Paid."))
    result = call(streaming)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "No generations")
    assert all(body["stream"] is True for body in primary.requests)


def test_output_failing_its_schema_is_retried_then_parsed(models, primary, fallback):
    primary.script(ok("not json"), ok('{"answer": "yes", "confidence": 0.9}'))
    result = call(models, schema=Verdict)
    assert_answered_by_primary_after_one_retry(result, primary, fallback, "SchemaError")
    assert result.parsed == Verdict(answer="yes", confidence=0.9)
    sent = primary.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == ["answer", "confidence"]


# -- permanent faults: not retried -----------------------------------------------------------------


def test_401_is_not_retried_and_the_fallback_answers(models, primary, fallback):
    primary.script(status(401))
    fallback.script(ok("From the fallback.", prompt_tokens=9, completion_tokens=4))
    events: list[dict] = []
    result = call(models, events=events)
    assert primary.request_count == 1
    assert fallback.request_count == 1
    assert fallback.requests[0]["model"] == "fallback-model"
    assert result.ok and result.text == "From the fallback."
    assert result.record["model"] == "openai:fallback-model"
    assert result.record["fallback_used"] is True
    assert result.record["attempts"] == 2
    assert result.record["retries"] == []
    assert (result.record["input_tokens"], result.record["output_tokens"]) == (9, 4)
    assert events == [{"event": "model_failed", "node": "node", "model": "openai:primary-model", "error": "HTTP 401 (OpenAIAuthenticationError)"},
                      {"event": "fallback", "node": "node", "model": "openai:fallback-model", "error": "HTTP 401 (OpenAIAuthenticationError)"}]


@pytest.mark.parametrize("code", [400, 403, 404])
def test_client_error_is_not_retried(solo, primary, code):
    primary.script(status(code), ok("never reached"))
    result = call(solo)
    assert primary.request_count == 1
    assert not result.ok
    assert result.record["attempts"] == 1
    assert result.record["retries"] == []
    assert result.record["error"].startswith(f"HTTP {code} ")


# -- fallback and failure --------------------------------------------------------------------------


def test_primary_exhausted_by_500s_then_the_fallback_answers(models, primary, fallback):
    primary.script(status(500), status(502), status(503), ok("never reached"))
    fallback.script(ok("From the fallback."))
    result = call(models)
    assert primary.request_count == FAST.max_attempts
    assert result.ok and result.text == "From the fallback."
    assert result.record["model"] == "openai:fallback-model"
    assert result.record["fallback_used"] is True
    assert result.record["attempts"] == FAST.max_attempts + 1
    assert [(r["model"], r["attempt"], r["error"]) for r in result.record["retries"]] == [
        ("openai:primary-model", 1, "HTTP 500 (OpenAIAPIError)"),
        ("openai:primary-model", 2, "HTTP 502 (OpenAIAPIError)"),
    ]


def test_both_models_failing_is_an_error_result_not_an_exception(models, primary, fallback):
    primary.script(*[status(500)] * 3)
    fallback.script(drop(), drop(), status(503))
    result = call(models)
    assert not result.ok
    assert result.message is None and result.parsed is None and result.text == ""
    assert result.record["model"] is None
    assert result.record["error"] == "HTTP 503 (OpenAIAPIError)"
    assert result.record["attempts"] == 2 * FAST.max_attempts
    assert (primary.request_count, fallback.request_count) == (3, 3)
    assert [r["model"] for r in result.record["retries"]] == ["openai:primary-model"] * 2 + ["openai:fallback-model"] * 2


# -- streaming -------------------------------------------------------------------------------------


def test_streamed_free_text_call_records_usage(primary):
    streaming = ModelRegistry(primary=openai_handle(primary, "primary-model", streaming=True))
    primary.script(ok("Paid on the third of March.", prompt_tokens=21, completion_tokens=8))
    result = call(streaming, stream_tokens=True)
    assert result.ok and result.text == "Paid on the third of March."
    assert (result.record["input_tokens"], result.record["output_tokens"]) == (21, 8)
    [body] = primary.requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# -- through a compiled graph ----------------------------------------------------------------------


class QAState(TypedDict, total=False):
    question: str
    answer: str
    verdict: dict
    needs_human: bool
    error: str | None
    calls: Annotated[list[CallRecord], operator.add]


def qa_graph(schema: type[BaseModel] | None = None) -> Any:
    node = ResilientAgentNode(
        "answer",
        lambda state: [HumanMessage(state["question"])],
        lambda state, result: {"answer": result.text, **({"verdict": result.parsed.model_dump()} if result.parsed else {})},
        schema=schema,
    )
    builder = StateGraph(QAState, context_schema=SignoffContext)
    builder.add_node("answer", node)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()


def run_graph(graph: Any, context: SignoffContext) -> tuple[dict, list[AIMessageChunk], list[dict]]:
    """Stream as the CLI does; returns the final state, the token chunks and the custom events."""
    final: dict = {}
    tokens: list[AIMessageChunk] = []
    custom: list[dict] = []
    for mode, payload in graph.stream({"question": "Is the invoice paid?"}, context=context, stream_mode=["values", "messages", "custom"]):
        if mode == "values":
            final = payload
        elif mode == "messages":
            tokens.append(payload[0])
        else:
            custom.append(payload)
    return final, tokens, custom


def test_graph_streams_tokens_of_a_free_text_answer_after_a_retry(models, primary, fallback, pool):
    primary.script(status(429, retry_after=0), ok("Paid on the third of March.", prompt_tokens=21, completion_tokens=8))
    final, tokens, custom = run_graph(qa_graph(), SignoffContext(models=models, pool=pool, policy=FAST))
    assert final["answer"] == "Paid on the third of March."
    assert "".join(str(t.content) for t in tokens) == "Paid on the third of March."
    assert len([t for t in tokens if t.content]) > 1, "tokens arrive one by one"
    assert all(body["stream"] is True for body in primary.requests), "messages mode makes ChatOpenAI stream (SSE)"
    [record] = final["calls"]
    assert (record["model"], record["attempts"], record["input_tokens"], record["output_tokens"]) == ("openai:primary-model", 2, 21, 8)
    assert [e["event"] for e in custom] == ["retry"]
    assert "needs_human" not in final


def test_graph_structured_answer_is_parsed_and_not_streamed_as_tokens(models, primary, pool):
    primary.script(ok('{"answer": "yes", "confidence": 0.75}'))
    final, tokens, _ = run_graph(qa_graph(Verdict), SignoffContext(models=models, pool=pool, policy=FAST))
    assert final["verdict"] == {"answer": "yes", "confidence": 0.75}
    assert tokens == [], "JSON answers are tagged nostream"
    [body] = primary.requests
    assert body["response_format"]["type"] == "json_schema"
    assert not body.get("stream"), "fetched whole: no tokens to show, and parsing a stream chunk by chunk costs a worker CPU"


def test_graph_with_both_models_failing_ends_with_needs_human(models, primary, fallback, pool):
    primary.script(status(401))
    fallback.script(*[status(500)] * 3)
    final, tokens, custom = run_graph(qa_graph(), SignoffContext(models=models, pool=pool, policy=FAST))
    assert final["needs_human"] is True
    assert final["error"] == "answer: HTTP 500 (OpenAIAPIError)"
    assert "answer" not in final
    assert tokens == []
    [record] = final["calls"]
    assert record["model"] is None and record["error"] == "HTTP 500 (OpenAIAPIError)"
    assert record["attempts"] == 1 + FAST.max_attempts
    assert [e["event"] for e in custom] == ["model_failed", "fallback", "retry", "retry", "model_failed"]
    assert (primary.request_count, fallback.request_count) == (1, 3)


# -- the fault server itself -----------------------------------------------------------------------


def test_fault_server_lists_models_and_records_requests(primary):
    client = openai.OpenAI(base_url=primary.base_url, api_key="test", max_retries=0, timeout=TIMEOUT)
    assert [m.id for m in client.models.list()] == ["fault-model"]
    primary.script(ok("scripted"))
    first = client.chat.completions.create(model="echo-me", messages=[{"role": "user", "content": "hi"}])
    second = client.chat.completions.create(model="echo-me", messages=[{"role": "user", "content": "again"}])
    assert (first.model, first.choices[0].message.content) == ("echo-me", "scripted")
    assert second.choices[0].message.content == "ok", "an empty script answers ok"
    assert primary.request_count == 2 and primary.pending == 0
    assert primary.requests[1]["messages"][0]["content"] == "again"
