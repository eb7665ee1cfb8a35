"""Metrics read from PostgreSQL at scrape time: the same answer from every process.

Threads by graph and status, threads waiting at each gate, the seconds each gate visit
waited for its decision, decisions by kind, queued jobs, notifications delivered and failed,
refunds issued and compensated. A few grouped counts per scrape; the gate waits scan the
decisions once (arrival is the time in the gate's checkpoint id, a UUIDv6 LangGraph makes
from the clock, so no extra column is written on the decision path).
"""

from __future__ import annotations

from typing import Any, Iterator

#: Seconds to a decision: a minute to a week.
WAIT_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 24 * 3600.0, 3 * 86400.0, 7 * 86400.0)

#: Seconds since the Unix epoch of a LangGraph checkpoint id (UUIDv6: 60-bit count of 100 ns
#: since 1582-10-15, in hex digits 1-12 and 14-16).
_ARRIVED = ("((('x' || lpad(substr(h, 1, 12) || substr(h, 14, 3), 16, '0'))::bit(64)::bigint)::float8 / 1e7 - 12219292800)")

_WAITS = (
    "WITH w AS (SELECT t.graph, a.gate, greatest(0, extract(epoch FROM a.decided_at) - " + _ARRIVED + ") AS s "
    "  FROM approvals a JOIN threads t USING (thread_id), LATERAL (SELECT replace(a.checkpoint_id, '-', '') AS h) x "
    "  WHERE substr(h, 13, 1) = '6') "
    "SELECT graph, gate, count(*) AS n, coalesce(sum(s), 0) AS total, "
    + ", ".join(f"count(*) FILTER (WHERE s <= {bound}) AS b{i}" for i, bound in enumerate(WAIT_BUCKETS))
    + " FROM w GROUP BY graph, gate"
)


class DatabaseCollector:
    """A prometheus_client collector over one connection pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def describe(self) -> list[Any]:
        return []  # read at scrape time only: never at registration, when the database may be down

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        up = GaugeMetricFamily("signoff_database_up", "1 if PostgreSQL answered this scrape's queries, else 0.")
        try:
            with self.pool.connection() as conn:
                threads = conn.execute("SELECT graph, status, count(*) AS n FROM threads GROUP BY 1, 2").fetchall()
                waiting = conn.execute("SELECT graph, coalesce(gate, '') AS gate, count(*) AS n FROM threads "
                                       "WHERE status = 'waiting' GROUP BY 1, 2").fetchall()
                waits = conn.execute(_WAITS, prepare=False).fetchall()
                decisions = conn.execute("SELECT CASE WHEN handover THEN 'handed_over' ELSE decision END AS kind, count(*) AS n "
                                         "FROM approvals GROUP BY 1 UNION ALL SELECT 'stage_approved', count(*) FROM stage_approvals").fetchall()
                jobs = conn.execute("SELECT kind, count(*) AS n FROM jobs WHERE status = 'todo' GROUP BY 1").fetchall()
                notes = conn.execute("SELECT channel, status, count(*) AS n FROM notifications WHERE status IN ('sent', 'failed') "
                                     "GROUP BY 1, 2").fetchall()
                refunds = conn.execute("SELECT step, count(*) AS n FROM payment_operations WHERE status = 'done' "
                                       "AND step IN ('refund', 'void_credit_note') GROUP BY 1").fetchall()
        except Exception:  # noqa: BLE001 - a scrape says the database is down rather than failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        gauge = GaugeMetricFamily("signoff_threads", "Threads by graph and status.", labels=["graph", "status"])
        for r in threads:
            gauge.add_metric([r["graph"], r["status"]], r["n"])
        yield gauge
        gauge = GaugeMetricFamily("signoff_gate_waiting_threads", "Threads waiting at a gate for a decision.", labels=["graph", "gate"])
        for r in waiting:
            gauge.add_metric([r["graph"], r["gate"]], r["n"])
        yield gauge
        histogram = HistogramMetricFamily("signoff_gate_wait_seconds", "Seconds from a thread's arrival at a gate to its decision.",
                                          labels=["graph", "gate"])
        for r in waits:
            buckets = [(_le(bound), r[f"b{i}"]) for i, bound in enumerate(WAIT_BUCKETS)] + [("+Inf", r["n"])]
            histogram.add_metric([r["graph"], r["gate"]], buckets, float(r["total"]))
        yield histogram
        counter = CounterMetricFamily("signoff_decisions", "Decisions recorded, by kind (approved, rejected, expired, "
                                      "handed_over, stage_approved).", labels=["kind"])
        for r in decisions:
            counter.add_metric([r["kind"]], r["n"])
        yield counter
        gauge = GaugeMetricFamily("signoff_jobs_queued", "Jobs waiting for a worker, by kind.", labels=["kind"])
        for r in jobs:
            gauge.add_metric([r["kind"]], r["n"])
        yield gauge
        counter = CounterMetricFamily("signoff_notifications", "Notifications by channel and outcome (delivered, failed).",
                                      labels=["channel", "outcome"])
        for r in notes:
            counter.add_metric([r["channel"], "delivered" if r["status"] == "sent" else "failed"], r["n"])
        yield counter
        counter = CounterMetricFamily("signoff_refunds", "Refunds issued, and credit notes voided to compensate a refused refund.",
                                      labels=["outcome"])
        for r in refunds:
            counter.add_metric(["issued" if r["step"] == "refund" else "compensated"], r["n"])
        yield counter


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


_registered: set[int] = set()


def register(pool: Any) -> None:
    """Add the collector for `pool` to the default registry (once per pool)."""
    from prometheus_client import REGISTRY

    if id(pool) in _registered:
        return
    REGISTRY.register(DatabaseCollector(pool))  # type: ignore[arg-type]
    _registered.add(id(pool))
