"""Limits that protect the model provider: at most SIGNOFF_MODEL_CONCURRENCY calls in flight
per model, shared by every thread of a worker; a rate-limited call waits out Retry-After
outside its slot, so other threads use the slot meanwhile."""

from __future__ import annotations

import threading
import time

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from checkpoint import threads
from nodes.models import ModelHandle, ModelRegistry
from nodes.resilient import ModelLimiter, ResiliencePolicy, call_model
from tests.fault_server import FaultServer, held, ok, prompt_text, status
from tests.scripted import CANNOT_ANSWER
from tests.procs import wait_until
from tests.worker_procs import submit, workers  # noqa: F401 - fixture

CLASSIFY = "Classify the customer message"


def test_a_worker_never_has_more_calls_in_flight_than_the_model_limit(server, pool, workers):
    release = threading.Event()
    server.rule(CLASSIFY, held(release, then=ok('{"intent": "technical"}')))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    workers("--concurrency", "8", extra_env={"SIGNOFF_MODEL_CONCURRENCY": "2"})
    tids = [f"lim{i}" for i in range(8)]
    try:
        for tid in tids:
            submit(pool, "support", tid, f"The sync engine corrupts my notes ({tid})")
        wait_until(lambda: server.matching(CLASSIFY) == 2, what="two classify calls in flight")
        with pool.connection() as conn:
            wait_until(lambda: conn.execute("SELECT count(*) AS n FROM threads WHERE status = 'running'").fetchone()["n"] == 8,
                       what="all eight threads running in the worker")
        time.sleep(0.5)  # an absence can only be shown over time: nobody else got a slot
        assert server.matching(CLASSIFY) == 2, "the other six wait for a slot, not at the provider"
    finally:
        release.set()
    wait_until(lambda: all(threads.get(pool, t).status == "waiting" for t in tids), timeout=60, what="all eight at their gates")
    assert server.matching(CLASSIFY) == 8


def test_a_rate_limited_call_waits_outside_its_slot():
    with FaultServer() as server:
        server.once("first", status(429, retry_after=0.6))
        chat = ChatOpenAI(model="m", api_key="k", base_url=server.base_url, max_retries=0)  # type: ignore[arg-type]
        models = ModelRegistry(primary=ModelHandle("openai:m", chat, structured_mode="prompt"))
        limiter = ModelLimiter(1)
        policy = ResiliencePolicy(max_attempts=3, retry_after_cap=2.0)
        results: dict[str, object] = {}

        def ask(text: str) -> None:
            results[text] = call_model("n", [HumanMessage(text)], models, policy, stream_tokens=False, limiter=limiter)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        wait_until(lambda: server.matching("first"), what="the first call")
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        first.join(10)
        second.join(10)
        order = [prompt_text(body) for body in server.requests]
    assert [("first" in p, "second" in p) for p in order] == [(True, False), (False, True), (True, False)], order
    assert all(r.ok for r in results.values())  # type: ignore[attr-defined]
    assert limiter.peak == {"openai:m": 1}


def test_a_worker_says_at_start_when_postgresql_has_too_few_connections_left_for_its_pool(server, pool, database_url, workers):
    import psycopg

    from checkpoint.database import connection_headroom

    usable, in_use = connection_headroom(pool)
    need = 4 + 4  # --concurrency 4: min(4, 32) + 4
    held_open = [psycopg.connect(database_url) for _ in range(usable - in_use - need)]  # leaves fewer than `need` for the worker
    try:
        worker = workers("--concurrency", "4")
        assert worker.wait_for(r"warning: this worker may open 8 connections and PostgreSQL lets \d more in", timeout=10)
        assert "lower --concurrency" in worker.output and "max_connections" in worker.output
    finally:
        for conn in held_open:
            conn.close()


def test_a_worker_with_enough_connections_left_says_nothing_about_them(server, pool, workers):
    server.rule(CLASSIFY, ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    worker = workers("--concurrency", "4")
    submit(pool, "support", "roomy", "The sync engine corrupts my notes")
    wait_until(lambda: threads.get(pool, "roomy").status == "waiting", timeout=30, what="the thread at its gate")
    assert "warning" not in worker.output
