"""OpenTelemetry traces, exported by real `signoff` processes to a local OTLP/HTTP receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import expect
from tests.fault_server import hang, ok, status
from tests.otlp_receiver import OtlpReceiver
from tests.scripted import ANSWERED
from tests.test_cli import BILLING_ANSWER, thread_id_from


@pytest.fixture
def receiver():
    with OtlpReceiver() as receiver:
        yield receiver


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_a_thread_started_in_one_process_and_approved_in_another_is_one_trace(env, pool, server, receiver):
    from checkpoint import tokens

    second_shell = tokens.create(pool, "second-shell")  # the approving shell acts through its reviewer token
    server.script(ok('{"intent": "billing"}', prompt_tokens=11, completion_tokens=5), ok(ANSWERED), ok(BILLING_ANSWER, prompt_tokens=40, completion_tokens=20))
    traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "signoff-test"}
    started = run_cli(["start", "support", "I was charged twice this month"], traced)
    assert started.returncode == 0, started.stderr
    tid = thread_id_from(started.stdout)
    approved = run_cli(["approve", tid, *expect(env["DATABASE_URL"], tid)], {**traced, "SIGNOFF_TOKEN": second_shell})
    assert approved.returncode == 0, approved.stderr

    spans = list(receiver.spans)  # both processes flushed before they exited: nothing to wait for
    assert {s.trace_id for s in spans} == {spans[0].trace_id}, "one trace for the thread, across both processes"
    assert all(s.attributes.get("signoff.thread_id") == tid for s in spans), [s.name for s in spans]
    assert {s.service for s in spans} == {"signoff-test"}
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert len(roots) == 1 and all(s.parent_id in ids for s in spans if s.parent_id), "one tree"

    nodes = {s.name: s for s in spans if "signoff.node" in s.attributes and not s.name.startswith("chat ")}
    for node in ("classify", "billing_agent", "draft_reply", "review", "send_approved_reply"):
        assert node in nodes, sorted(nodes)
        assert nodes[node].attributes["signoff.graph"] == "support"
        assert nodes[node].attributes["signoff.attempt"] == 1
    assert nodes["classify"].attributes["signoff.step"] < nodes["draft_reply"].attributes["signoff.step"]

    calls = [s for s in spans if s.name == "chat test-model"]
    assert len(calls) == 3
    by_node = {c.attributes["signoff.node"]: c for c in calls}
    for call in calls:
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.provider.name"] == "openai"
        assert call.attributes["gen_ai.request.model"] == "test-model"
        assert call.parent_id == nodes[call.attributes["signoff.node"]].span_id
    assert (by_node["classify"].attributes["gen_ai.usage.input_tokens"], by_node["classify"].attributes["gen_ai.usage.output_tokens"]) == (11, 5)
    # the reply is streamed: its usage too
    assert (by_node["draft_reply"].attributes["gen_ai.usage.input_tokens"], by_node["draft_reply"].attributes["gen_ai.usage.output_tokens"]) == (40, 20)

    [gate] = [s for s in spans if s.name == "gate review"]
    assert gate.attributes["signoff.decision"] == "approved" and gate.attributes["signoff.actor"] == "second-shell"
    assert nodes["draft_reply"].end_ns <= gate.start_ns < gate.end_ns <= nodes["send_approved_reply"].start_ns


def test_retries_timeouts_and_fallbacks_are_events_on_the_node_span(env, server, receiver):
    server.script(hang(5), status(503), ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "SIGNOFF_FALLBACK_MODEL": "openai:other-model",
              "SIGNOFF_CALL_TIMEOUT": "1", "SIGNOFF_MAX_ATTEMPTS": "2"}
    started = run_cli(["start", "support", "I was charged twice this month"], traced)
    assert started.returncode == 0, started.stderr

    [classify] = receiver.named("classify")
    assert [name for name, _ in classify.events] == ["timeout", "retry", "fallback"]
    retry, fallback = classify.events[1][1], classify.events[2][1]
    assert retry["signoff.attempt"] == 2 and retry["error.type"] == "APITimeoutError"
    assert fallback["gen_ai.request.model"] == "other-model" and fallback["error.type"] == "InternalServerError"
    calls = sorted((s for s in receiver.spans if s.parent_id == classify.span_id), key=lambda s: s.start_ns)
    assert [c.attributes["gen_ai.request.model"] for c in calls] == ["test-model", "test-model", "other-model"]
    assert [c.attributes.get("error.type") for c in calls] == ["APITimeoutError", "InternalServerError", None]
    assert [c.status_code for c in calls] == [2, 2, 0]  # ERROR, ERROR, UNSET


@pytest.mark.parametrize("collector", ["hangs", "refuses connections"])
def test_a_collector_that_cannot_take_spans_delays_a_command_by_the_exporter_timeout_at_most(env, server, collector):
    server.script(*[ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER)] * 2)
    began = time.monotonic()
    plain = run_cli(["start", "support", "I was charged twice this month"], env)
    untraced = time.monotonic() - began
    assert plain.returncode == 0, plain.stderr
    with OtlpReceiver(hold=True) as hanging:
        endpoint = hanging.endpoint
        if collector == "refuses connections":
            hanging.__exit__()  # nothing listens there any more
        began = time.monotonic()
        traced = run_cli(["start", "support", "I was charged twice this month"],
                         {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
        elapsed = time.monotonic() - began
        if collector == "hangs":
            assert hanging.requests >= 1, "the spans were sent"
    assert traced.returncode == 0, traced.stderr
    assert "waiting at gate review" in traced.stdout, "no step lost"
    assert len(traced.stderr.splitlines()) == 1 and "traces could not be exported" in traced.stderr, traced.stderr
    assert elapsed < untraced + 1 + 2.5, (elapsed, untraced)


def test_without_otel_variables_no_exporter_or_span_processor_is_loaded(env, server):
    """(LangSmith, under LangChain, imports the SDK's trace module whenever it is installed;
    what tracing would add, the exporter and the batch processor with its thread, stays out.)"""
    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    untraced = {k: v for k, v in {**os.environ, **env}.items() if not k.startswith("OTEL_")}
    started = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli", "start", "support", "I was charged twice this month"],
                             env=untraced, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    assert "waiting at gate review" in started.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in started.stderr.splitlines() if line.startswith("import time:")]
    assert "runtime.thread_runner" in imported and "observability.hooks" in imported
    loaded = [name for name in imported if name.startswith(("opentelemetry.exporter", "opentelemetry.sdk.trace.export"))]
    assert not loaded, "nothing of tracing is set up in an untraced run"


def test_a_decision_made_through_serve_joins_the_threads_trace(env, server, receiver, cli):
    import json
    import urllib.request

    from checkpoint.database import open_pool
    from checkpoint.tokens import create as create_token
    from tests.procs import spawn_cli, wait_until
    from tests.test_metrics import free_port, get_or_none

    server.script(ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    started = run_cli(["start", "support", "I was charged twice this month", "--thread", "sv1"], traced)
    assert started.returncode == 0, started.stderr
    pool = open_pool(env["DATABASE_URL"])
    try:
        token = create_token(pool, "web-reviewer")
    finally:
        pool.close()
    port = free_port()
    serving = spawn_cli(["serve", "--port", str(port)], traced)
    try:
        wait_until(lambda: get_or_none(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="serve to answer")
        digest = expect(env["DATABASE_URL"], "sv1")[1]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/threads/sv1/approve", method="POST",
                                         data=json.dumps({"expect": digest}).encode(),
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
        [gate] = wait_until(lambda: receiver.named("gate review"), timeout=30, what="serve's gate span")
    finally:
        serving.kill()
        for stream in (serving.popen.stdout, serving.popen.stderr):
            stream.close()
    assert gate.attributes["signoff.actor"] == "web-reviewer" and gate.attributes["signoff.decision"] == "approved"
    assert gate.trace_id == receiver.named("classify")[0].trace_id, "the decision joins the trace the CLI started"


def test_a_node_run_again_after_its_process_died_is_its_second_attempt(env, server, receiver, pool):
    import threading

    from checkpoint import events
    from tests.fault_server import held
    from tests.procs import spawn_cli, wait_until

    release = threading.Event()
    server.script(held(release), ok('{"intent": "billing"}'), ok(ANSWERED), ok(BILLING_ANSWER))
    traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    first = spawn_cli(["start", "support", "I was charged twice this month", "--thread", "k1"], traced)
    try:
        wait_until(lambda: server.request_count == 1, what="classify's model call")
        wait_until(lambda: any(e.event["event"] == "node_start" for e in events.read_since(pool, "k1")), what="the node's start to be recorded")
        first.kill()
    finally:
        release.set()
        for stream in (first.popen.stdout, first.popen.stderr):
            stream.close()
    resumed = run_cli(["resume", "k1"], traced)
    assert resumed.returncode == 0, resumed.stderr
    assert "waiting at gate review" in resumed.stdout
    [classify] = receiver.named("classify")  # the killed process exported nothing
    assert classify.attributes["signoff.attempt"] == 2
    assert receiver.named("billing_agent")[0].attributes["signoff.attempt"] == 1
