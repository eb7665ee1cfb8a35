"""Prometheus metrics of what this process does: node runs, model calls, job pickups.

Counted only in a process that serves /metrics (`signoff serve`, `signoff worker
--metrics-port N`): `enable()` turns them on there, and everywhere else the hooks return at
their first test. What every process shares (threads, gate waits, decisions, queued jobs,
notifications, refunds) is read from PostgreSQL at scrape time instead (db_metrics.py), so
it is the same whichever process is asked. Labels are graph, node, model and outcome names,
never thread ids, so their number stays bounded.
"""

from __future__ import annotations

import threading
from typing import Any

_on = False
_lock = threading.Lock()
_metrics: Any = None

#: Seconds: a node runs from milliseconds (a decision applied) to minutes (a long draft).
NODE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PICKUP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def enabled() -> bool:
    return _on


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.node_runs = Counter("signoff_node_runs_total", "Node runs, by graph, node and outcome (ok, error).", ["graph", "node", "outcome"])
        self.node_seconds = Histogram("signoff_node_duration_seconds", "How long node runs took.", ["graph", "node"], buckets=NODE_BUCKETS)
        self.model_calls = Counter("signoff_model_calls_total", "Model calls (with their retries), by the model that answered "
                                   "(`none` when none did) and outcome.", ["model", "outcome"])
        self.model_retries = Counter("signoff_model_retries_total", "Model call attempts retried on the same model.", ["model"])
        self.model_fallbacks = Counter("signoff_model_fallbacks_total", "Model calls handed to the fallback model.", ["model"])
        self.model_errors = Counter("signoff_model_errors_total", "Failed model call attempts.", ["model"])
        self.model_tokens = Counter("signoff_model_tokens_total", "Tokens of model calls, by model and direction (input, output).",
                                    ["model", "direction"])
        self.job_pickup = Histogram("signoff_job_pickup_seconds", "From a job being due to a worker claiming it.", ["kind"],
                                    buckets=PICKUP_BUCKETS)
        self.jobs_claimed = Counter("signoff_jobs_claimed_total", "Jobs claimed by this worker, by kind.", ["kind"])


def enable() -> Any:
    """Count in this process from now on; the metrics (created once per process)."""
    global _on, _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
        _on = True
    return _metrics


def observe_event(graph: str, event: dict[str, Any]) -> None:
    """Count a run's event: a failed model attempt (retry: to be retried; model_failed: the
    model's last), a fallback, or a node's end with its duration and model calls."""
    if not _on:
        return
    m, kind = _metrics, event.get("event")
    if kind == "retry":
        m.model_retries.labels(str(event.get("model") or "none")).inc()
        m.model_errors.labels(str(event.get("model") or "none")).inc()
        return
    if kind == "model_failed":
        m.model_errors.labels(str(event.get("model") or "none")).inc()
        return
    if kind == "fallback":
        m.model_fallbacks.labels(str(event.get("model") or "none")).inc()
        return
    if kind != "node_end":
        return
    node = str(event.get("node") or "?")
    m.node_runs.labels(graph, node, "error" if event.get("error") else "ok").inc()
    m.node_seconds.labels(graph, node).observe(float(event.get("duration") or 0.0))
    for call in event.get("calls") or []:
        if isinstance(call, dict):
            observe_call(call)


def observe_call(call: dict[str, Any]) -> None:
    """One CallRecord (nodes/resilient.py): the call, by the model that answered, and its tokens."""
    m = _metrics
    model = str(call.get("model") or "none")
    m.model_calls.labels(model, "error" if call.get("error") else "ok").inc()
    if call.get("input_tokens"):
        m.model_tokens.labels(model, "input").inc(int(call["input_tokens"]))
    if call.get("output_tokens"):
        m.model_tokens.labels(model, "output").inc(int(call["output_tokens"]))


def observe_claims(claimed: list[Any]) -> None:
    """Jobs a worker just claimed: how long each waited to be picked up."""
    if not _on:
        return
    for job in claimed:
        _metrics.jobs_claimed.labels(job.kind).inc()
        waited = getattr(job, "waited", None)
        if waited is not None:
            _metrics.job_pickup.labels(job.kind).observe(max(0.0, float(waited)))


def exposition() -> tuple[bytes, str]:
    """The text format of every registered metric, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
