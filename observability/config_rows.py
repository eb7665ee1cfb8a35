"""`signoff config`'s rows for the observability settings: what is in force, and what a
process would refuse to start on."""

from __future__ import annotations

import os
from typing import Any

from checkpoint.settings import redact_url


def rows(env: Any = None) -> list[tuple[str, str, str]]:
    from observability import tracing
    from observability.logs import log_format
    from observability.usage import model_prices

    env = os.environ if env is None else env
    try:
        prices = model_prices(env)
        priced = f"{len(prices)} models priced" if prices else "(unset: tokens, no cost)"
    except Exception as exc:  # noqa: BLE001 - shown, not raised: `config` is where one looks for what is wrong
        priced = f"CANNOT BE USED: {exc}"
    try:
        fmt = log_format(env)
    except Exception as exc:  # noqa: BLE001
        fmt = f"CANNOT BE USED: {exc}"
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
    traces = (redact_url(endpoint) if endpoint else "(exporter default)") if tracing.configured(env) else "(unset: no traces)"
    return [
        ("SIGNOFF_MODEL_PRICES", priced, "per million input/output tokens per model, JSON"),
        ("SIGNOFF_LOG_FORMAT", fmt, "worker and serve logs: text or json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", traces, "OpenTelemetry traces over OTLP/HTTP (extra otel)"),
        ("OTEL_SERVICE_NAME", env.get("OTEL_SERVICE_NAME") or "(unset: signoff)", "the service name on every span"),
        ("OTEL_TRACES_EXPORTER", env.get("OTEL_TRACES_EXPORTER") or "(unset: otlp when an endpoint is set)", "otlp, console or none"),
    ]
