"""OpenTelemetry traces: on when the standard OTEL_* variables say so, absent otherwise.

On when any of OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
OTEL_TRACES_EXPORTER or OTEL_SERVICE_NAME is set (OTEL_TRACES_EXPORTER=none or
OTEL_SDK_DISABLED=true turn it off). Spans go to an OTLP/HTTP collector through a batch
processor (the `otel` extra), or to stderr with OTEL_TRACES_EXPORTER=console. Off, nothing of
OpenTelemetry is imported and every hook returns at its first test.

One trace per thread: the first traced run of a thread stores its span's context with the
thread (threads.trace_context), and every later run, decision or gate wait, in any process,
starts its spans under it. A collector that cannot be reached never fails a command: the
exporter gives up after its timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default), and spans
are flushed before the process exits.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from datetime import datetime
from typing import Any

_lock = threading.Lock()
_tracer: Any = None
_provider: Any = None
_tried = False


def configured(env: Any = None) -> bool:
    """True when the OTEL_* variables ask for traces."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_SERVICE_NAME"))


def tracer() -> Any:
    """This process's tracer, set up on first use; None when traces are off (or the SDK is
    missing, which is said once on stderr)."""
    global _tried
    if _tracer is not None or _tried:
        return _tracer
    with _lock:
        if not _tried:
            _tried = True
            if configured():
                _set_up()
    return _tracer


def _set_up() -> None:
    global _tracer, _provider
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        print("warning: OTEL_* variables ask for traces but OpenTelemetry is not installed: "
              "pip install 'signoff[otel]' (running without traces)", file=sys.stderr)
        return
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter: Any = ConsoleSpanExporter(out=sys.stderr)  # stdout is the command's own (--json documents)
    else:
        if kind != "otlp" or (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")) != "http/protobuf":
            print(f"warning: Signoff exports traces as OTLP over HTTP (protobuf) only; OTEL_TRACES_EXPORTER={kind!r} "
                  "and OTEL_EXPORTER_OTLP_PROTOCOL are read as otlp, http/protobuf", file=sys.stderr)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            print("warning: the OTLP/HTTP exporter is not installed: pip install 'signoff[otel]' (running without traces)", file=sys.stderr)
            return
        exporter = OTLPSpanExporter()
    _quiet_exporter_logs()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "signoff"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    try:
        trace.set_tracer_provider(provider)  # so OpenTelemetry instrumentation added by the operator joins the same traces
    except Exception:  # noqa: BLE001 - one was set already: ours still exports Signoff's spans
        pass
    _provider = provider
    _tracer = provider.get_tracer("signoff")
    atexit.register(flush)


def _quiet_exporter_logs() -> None:
    """One line on stderr the first time spans cannot be exported, then nothing: the SDK
    logs every retry and failure (a traceback-sized message each), which would bury a
    command's own output under a collector's outage that changes nothing of its work."""
    import logging

    class OnceToStderr(logging.Handler):
        said = False

        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno < logging.WARNING or OnceToStderr.said:
                return
            OnceToStderr.said = True
            reason = record.getMessage().splitlines()[0][:200] if record.getMessage() else record.levelname
            print(f"warning: traces could not be exported ({reason}); the run is not affected", file=sys.stderr)

    logger = logging.getLogger("opentelemetry")
    logger.addHandler(OnceToStderr())
    logger.propagate = False


def flush() -> None:
    """Export what is buffered, within the exporter's timeout; before a process exits."""
    provider = _provider
    if provider is None:
        return
    try:
        provider.force_flush(timeout_millis=int(1000 * export_timeout()))
    except Exception:  # noqa: BLE001 - traces are best effort; the command's result is not
        pass


def export_timeout() -> float:
    """Seconds the exporter waits for the collector (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, 10)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        try:
            value = float(os.environ.get(name) or "nan")
        except ValueError:
            continue
        if 0 < value < 3600:
            return value
    return 10.0


def nanoseconds(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


# --- the thread's trace -----------------------------------------------------------------------


def stored_context(pool: Any, thread_id: str) -> str | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT trace_context FROM threads WHERE thread_id = %s", (thread_id,)).fetchone()
    return row["trace_context"] if row else None


def parent_of(traceparent: str | None) -> Any:
    """The OpenTelemetry context whose parent is the stored span (None: a new trace)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def traceparent(span: Any) -> str | None:
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
    return carrier.get("traceparent")


def keep_context(pool: Any, thread_id: str, span: Any) -> None:
    """Store `span` as the root of the thread's trace, unless one was stored meanwhile."""
    value = traceparent(span)
    if value:
        with pool.connection() as conn:
            conn.execute("UPDATE threads SET trace_context = %s WHERE thread_id = %s AND trace_context IS NULL", (value, thread_id))


def start_in_thread_trace(pool: Any, thread_id: str, name: str, *, attributes: dict[str, Any], start_time: int | None = None) -> Any:
    """A span in the thread's trace: under its stored context, or as the root of a new trace
    that is then stored with the thread. None when traces are off."""
    t = tracer()
    if t is None:
        return None
    stored = stored_context(pool, thread_id)
    span = t.start_span(name, context=parent_of(stored), attributes=attributes, start_time=start_time)
    if stored is None:
        keep_context(pool, thread_id, span)
    return span


def record_gate_wait(pool: Any, thread_id: str, graph: str, gate: str, decision: str, actor: str,
                     arrived: datetime | None, decided: datetime) -> None:
    """The wait at a gate as one span, from the thread's arrival to the decision."""
    span = start_in_thread_trace(pool, thread_id, f"gate {gate}", start_time=nanoseconds(arrived or decided), attributes={
        "signoff.thread_id": thread_id, "signoff.graph": graph, "signoff.gate": gate,
        "signoff.decision": decision, "signoff.actor": actor,
        "signoff.wait_seconds": max(0.0, (decided - arrived).total_seconds()) if arrived else 0.0,
    })
    if span is not None:
        span.end(end_time=nanoseconds(decided))
