"""Prometheus metrics, health and structured logs of real `signoff worker` and `signoff serve`
processes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from checkpoint import jobs, threads
from graphs.registry import SUPPORT
from runtime.thread_runner import ThreadRunner
from tests.fault_server import ok
from tests.procs import wait_until
from tests.scripted import CANNOT_ANSWER
from tests.worker_procs import submit, workers  # noqa: F401 - fixture


@pytest.fixture
def server(server):
    """The support graph escalates (technical, no answer): two model calls per thread."""
    server.rule("Classify the customer message", ok('{"intent": "technical"}', prompt_tokens=11, completion_tokens=5))
    server.rule("technical support agent", ok(CANNOT_ANSWER, prompt_tokens=30, completion_tokens=9))
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def at_gate(pool, *tids: str) -> bool:
    return all((row := threads.get(pool, tid)) is not None and row.status == "waiting" and jobs.active_job(pool, tid) is None for tid in tids)


def test_a_workers_metrics_grow_while_it_works_and_count_the_threads_waiting_at_gates(pool, workers, env):
    port = free_port()
    workers("--concurrency", "4", "--metrics-port", str(port))
    submit(pool, "support", "m1", "The sync engine corrupts my notes")
    submit(pool, "support", "m2", "The sync engine corrupts my notes")
    wait_until(lambda: at_gate(pool, "m1", "m2"), timeout=30, what="both threads at their gate")
    first = scrape(port)
    assert value(first, "signoff_threads", graph="support", status="waiting") == 2
    assert value(first, "signoff_gate_waiting_threads", graph="support", gate="review") == 2
    assert value(first, "signoff_node_runs_total", graph="support", node="classify", outcome="ok") == 2
    assert value(first, "signoff_node_duration_seconds_count", graph="support", node="escalate") == 2
    assert value(first, "signoff_model_calls_total", model="openai:test-model", outcome="ok") == 4
    assert value(first, "signoff_model_tokens_total", model="openai:test-model", direction="input") == 2 * (11 + 30)
    assert value(first, "signoff_model_tokens_total", model="openai:test-model", direction="output") == 2 * (5 + 9)
    assert value(first, "signoff_job_pickup_seconds_count", kind="start") == 2

    submit(pool, "support", "m3", "The sync engine corrupts my notes")
    ThreadRunner(pool, SUPPORT).decide("m1", "approved", actor="tester")
    jobs.enqueue(pool, "m1", "decision")
    wait_until(lambda: at_gate(pool, "m3") and threads.get(pool, "m1").status == "finished" and jobs.active_job(pool, "m1") is None,
               timeout=30, what="m3 at its gate and m1 finished")
    later = scrape(port)
    assert value(later, "signoff_node_runs_total", graph="support", node="classify", outcome="ok") == 3
    assert value(later, "signoff_node_runs_total", graph="support", node="send_approved_reply", outcome="ok") == 1
    assert value(later, "signoff_model_calls_total", model="openai:test-model", outcome="ok") == 6
    assert value(later, "signoff_threads", graph="support", status="waiting") == 2
    assert value(later, "signoff_threads", graph="support", status="finished") == 1
    assert value(later, "signoff_decisions_total", kind="approved") == 1
    assert value(later, "signoff_gate_wait_seconds_count", graph="support", gate="review") == 1
    assert value(later, "signoff_gate_wait_seconds_bucket", graph="support", gate="review", le="60.0") == 1
    assert 0 < value(later, "signoff_gate_wait_seconds_sum", graph="support", gate="review") < 60
    assert value(later, "signoff_jobs_queued") == 0
    assert not any("thread" in dict(labels) for _, labels in later), "no thread ids as labels"

    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready", body


def test_a_worker_with_json_logs_writes_one_json_object_a_line_with_the_thread_id(pool, workers):
    worker = workers("--concurrency", "2", extra_env={"SIGNOFF_LOG_FORMAT": "json"})
    submit(pool, "support", "j1", "The sync engine corrupts my notes")
    wait_until(lambda: at_gate(pool, "j1"), timeout=30, what="j1 at its gate")
    worker.wait_for(r'"event":"job_done"')
    lines = [json.loads(line) for line in worker.out]
    assert all({"time", "level", "event", "thread_id", "message"} <= set(line) for line in lines)
    assert [line["level"] for line in lines if line["event"] == "worker_started"] == ["info"]
    [done] = [line for line in lines if line["event"] == "job_done"]
    assert done["thread_id"] == "j1" and done["level"] == "info" and done["result"] == "waiting" and done["kind"] == "start"


@pytest.fixture
def serve(env):
    import subprocess
    import sys

    from tests.procs import ROOT, CliProcess, process_env

    port = free_port()
    popen = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=ROOT,
                             env=process_env({**env, "SIGNOFF_LOG_FORMAT": "json"}), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    proc = CliProcess(popen)
    try:
        proc.wait_for(r"serving on http://127\.0\.0\.1:\d+", timeout=60)
        wait_until(lambda: get_or_none(f"http://127.0.0.1:{port}/healthz"), timeout=20, what="the server to answer")
        yield proc, port
    finally:
        proc.kill()
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


def get_or_none(url: str) -> tuple[int, str] | None:
    try:
        return get(url)
    except OSError:
        return None


def test_serve_answers_health_readiness_and_metrics_and_logs_each_request_as_json(pool, cli, serve):
    started = cli("start", "support", "The sync engine corrupts my notes", "--thread", "s1")
    assert started.exit_code == 0, started.output
    proc, port = serve
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/healthz") == (200, '{"status":"ok"}')
    status, body = get(f"{base}/readyz")
    assert status == 200 and json.loads(body)["migrations"] == "current"
    samples = scrape(port)
    assert value(samples, "signoff_threads", graph="support", status="waiting") == 1
    assert value(samples, "signoff_database_up") == 1
    assert get(f"{base}/api/threads/s1")[0] == 401
    get(f"{base}/threads/s1/confirm/SIGNED-LINK-SECRET")

    with pool.connection() as conn:  # as if this version shipped a migration the database lacks
        conn.execute("DELETE FROM signoff_migrations WHERE version = (SELECT max(version) FROM signoff_migrations)")
    status, body = get(f"{base}/readyz")
    assert status == 503 and "pending" in json.loads(body)["migrations"]

    proc.wait_for(r'"path":"/readyz","status":503')
    requests = [json.loads(line) for line in proc.out if '"http_request"' in line][-6:]  # after the fixture's own /healthz
    assert [(r["method"], r["path"]) for r in requests] == [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
                                                            ("GET", "/api/threads/s1"), ("GET", "/threads/s1/confirm/***"), ("GET", "/readyz")]
    assert [r["status"] for r in requests][:4] + [r["status"] for r in requests][5:] == [200, 200, 200, 401, 503]
    assert [r["thread_id"] for r in requests] == [None, None, None, "s1", "s1", None]
    assert "SIGNED-LINK-SECRET" not in proc.output, "a signed link's capability never reaches the log"
    assert all(r["level"] in ("info", "error") and r["time"] and r["duration_ms"] >= 0 for r in requests)


def test_a_taken_metrics_port_is_one_line_and_exit_2(env):
    from tests.procs import spawn_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = spawn_cli(["worker", "--metrics-port", str(taken.getsockname()[1])], env)
        code = proc.wait(60)
    assert code == 2, proc.output
    assert len(proc.err) == 1 and "choose another --metrics-port" in proc.err[0] and not proc.out, proc.output


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "1"]])
def test_an_unknown_log_format_is_one_line_and_exit_2(env, command):
    from tests.procs import spawn_cli

    proc = spawn_cli(command, {**env, "SIGNOFF_LOG_FORMAT": "xml"})
    assert proc.wait(60) == 2, proc.output
    assert proc.err == ["error: SIGNOFF_LOG_FORMAT must be text or json"] and not proc.out, proc.output


def test_a_workers_metrics_count_retries_fallbacks_and_failed_attempts_by_model(pool, workers, server):
    from tests.fault_server import status

    server.once("Classify the customer message", status(503))  # test-model: retried once, then answers
    server.once("technical support agent", status(400))  # test-model: not retryable, so other-model answers
    port = free_port()
    workers("--metrics-port", str(port), extra_env={"SIGNOFF_FALLBACK_MODEL": "openai:other-model"})
    submit(pool, "support", "r1", "The sync engine corrupts my notes")
    wait_until(lambda: at_gate(pool, "r1"), timeout=30, what="r1 at its gate")
    samples = scrape(port)
    assert value(samples, "signoff_model_retries_total", model="openai:test-model") == 1
    assert value(samples, "signoff_model_errors_total", model="openai:test-model") == 2
    assert value(samples, "signoff_model_fallbacks_total", model="openai:other-model") == 1
    assert value(samples, "signoff_model_calls_total", model="openai:test-model", outcome="ok") == 1
    assert value(samples, "signoff_model_calls_total", model="openai:other-model", outcome="ok") == 1


def test_a_workers_metrics_count_notifications_delivered_and_failed_by_channel(pool, workers, env):
    from tests.http_receiver import HttpReceiver

    with HttpReceiver() as hook, HttpReceiver() as slack:
        slack.script(500)  # one attempt allowed: it fails for good
        port = free_port()
        workers("--metrics-port", str(port), extra_env={
            "SIGNOFF_SECRET_KEY": "k" * 40, "SIGNOFF_NOTIFY_WEBHOOK": hook.url, "SIGNOFF_NOTIFY_WEBHOOK_SECRET": "s3",
            "SIGNOFF_NOTIFY_SLACK": slack.url, "SIGNOFF_NOTIFY_MAX_ATTEMPTS": "1", "SIGNOFF_NOTIFY_BACKOFF": "1"})
        submit(pool, "support", "n1", "The sync engine corrupts my notes")
        wait_until(lambda: hook.delivered() and slack.received, timeout=60, what="the worker to try both channels")

        def failed_recorded() -> dict | None:
            samples = scrape(port)
            return samples if value(samples, "signoff_notifications_total", channel="slack", outcome="failed") else None

        samples = wait_until(failed_recorded, timeout=30, what="the failed delivery to be recorded")
    assert value(samples, "signoff_notifications_total", channel="webhook", outcome="delivered") == 1
    assert value(samples, "signoff_notifications_total", channel="slack", outcome="failed") == 1


def test_serve_on_another_port_with_no_public_url_says_where_notification_links_point(serve):
    proc, port = serve
    proc.wait_for(rf"links in notifications point at http://127\.0\.0\.1:8321, not this port: "
                  rf"set SIGNOFF_PUBLIC_URL=http://127\.0\.0\.1:{port}", stream="err", timeout=10)
