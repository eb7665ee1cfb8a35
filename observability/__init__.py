"""What an operator sees of Signoff from outside: OpenTelemetry traces, Prometheus metrics,
health endpoints, structured logs, and the tokens and cost of model calls.

Everything here is off and costs nothing unless configured: no OpenTelemetry SDK is imported
without the standard OTEL_* variables, no metric is counted in a process that serves no
/metrics. The existing modules call in through `observability.hooks` only.
"""
