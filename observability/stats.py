"""`signoff stats`: what the threads of a period did, in a few grouped queries.

Threads started in the period by status; the time gate visits decided in it waited (median,
95th percentile, arrival read from the gate's checkpoint id as in db_metrics.py); decisions
by kind and by reviewer; failures by reason (runs that failed, and node errors such as a
model that never answered); tokens and cost by model, from the steps' progress events (so
threads pruned with `db prune` count only their last stop's steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from observability.db_metrics import _ARRIVED
from observability.usage import Prices, price_of

_WAITS = (
    "WITH w AS (SELECT t.graph, a.gate, greatest(0, extract(epoch FROM a.decided_at) - " + _ARRIVED + ") AS s "
    "  FROM approvals a JOIN threads t USING (thread_id), LATERAL (SELECT replace(a.checkpoint_id, '-', '') AS h) x "
    "  WHERE a.decided_at >= %(since)s AND substr(h, 13, 1) = '6') "
    "SELECT graph, gate, count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS median, "
    "  percentile_cont(0.95) WITHIN GROUP (ORDER BY s) AS p95 FROM w GROUP BY GROUPING SETS ((graph, gate), ()) "
    "ORDER BY graph NULLS FIRST, gate"
)
_DECISIONS = (
    "SELECT actor, kind, count(*) AS n FROM ("
    "  SELECT actor, CASE WHEN handover THEN 'handed_over' ELSE decision END AS kind FROM approvals WHERE decided_at >= %(since)s "
    "  UNION ALL SELECT actor, 'stage_approved' FROM stage_approvals WHERE decided_at >= %(since)s) d "
    "GROUP BY actor, kind ORDER BY actor, kind"
)
_FAILURES = (
    "SELECT reason, count(*) AS n FROM ("
    "  SELECT 'run failed: ' || left(coalesce(detail->>'error', '?'), 160) AS reason FROM audit_events "
    "  WHERE kind = 'run_failed' AND at >= %(since)s "
    "  UNION ALL SELECT (event->>'node') || ': ' || left(event->>'error', 160) FROM progress_events "
    "  WHERE at >= %(since)s AND event->>'event' = 'node_end' AND coalesce(event->>'error', '') <> '') f "
    "GROUP BY reason ORDER BY n DESC, reason LIMIT 20"
)
_TOKENS = (
    "SELECT c->>'model' AS model, count(*) AS calls, coalesce(sum((c->>'input_tokens')::bigint), 0)::bigint AS input_tokens, "
    "  coalesce(sum((c->>'output_tokens')::bigint), 0)::bigint AS output_tokens, "
    "  count(*) FILTER (WHERE c->>'input_tokens' IS NULL AND c->>'output_tokens' IS NULL) AS without_usage "
    "FROM progress_events p, jsonb_array_elements(CASE WHEN jsonb_typeof(p.event->'calls') = 'array' THEN p.event->'calls' ELSE '[]' END) c "
    "WHERE p.at >= %(since)s AND p.event->>'event' = 'node_end' AND coalesce(c->>'model', '') <> '' "
    "GROUP BY 1 ORDER BY 1"
)


@dataclass(frozen=True)
class Stats:
    since: datetime
    threads: dict[str, int]
    waits: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    tokens: list[dict[str, Any]]


def gather(pool: Any, since: datetime, prices: Prices) -> Stats:
    params = {"since": since}
    with pool.connection() as conn:
        threads = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status, count(*) AS n FROM threads WHERE created_at >= %(since)s GROUP BY 1 ORDER BY 1", params)}
        waits = [{"graph": r["graph"], "gate": r["gate"], "decided": r["n"], "median_seconds": _round(r["median"]),
                  "p95_seconds": _round(r["p95"])} for r in conn.execute(_WAITS, params, prepare=False)]
        decisions = [{"actor": r["actor"], "kind": r["kind"], "count": r["n"]} for r in conn.execute(_DECISIONS, params)]
        failures = [{"reason": r["reason"], "count": r["n"]} for r in conn.execute(_FAILURES, params)]
        tokens = []
        for r in conn.execute(_TOKENS, params):
            price = price_of(r["model"], prices)
            cost = round((r["input_tokens"] * price[0] + r["output_tokens"] * price[1]) / 1e6, 8) if price else None
            tokens.append({"model": r["model"], "calls": r["calls"], "input_tokens": r["input_tokens"],
                           "output_tokens": r["output_tokens"], "calls_without_usage": r["without_usage"], "cost": cost})
    return Stats(since, threads, waits, decisions, failures, tokens)


def _round(value: Any) -> float | None:
    return round(float(value), 1) if value is not None else None


def as_json(stats: Stats, period: timedelta) -> dict[str, Any]:
    overall = next((w for w in stats.waits if w["graph"] is None), None)
    kinds: dict[str, int] = {}
    for d in stats.decisions:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + d["count"]
    priced = [t["cost"] for t in stats.tokens if t["cost"] is not None]
    return {
        "since": stats.since, "period_seconds": period.total_seconds(),
        "threads": stats.threads,
        "gate_waits": {"decided": overall["decided"] if overall else 0,
                       "median_seconds": overall["median_seconds"] if overall else None,
                       "p95_seconds": overall["p95_seconds"] if overall else None,
                       "by_gate": [w for w in stats.waits if w["graph"] is not None]},
        "decisions": {"by_kind": kinds, "by_reviewer": stats.decisions},
        "failures": stats.failures,
        "tokens": {"input_tokens": sum(t["input_tokens"] for t in stats.tokens), "output_tokens": sum(t["output_tokens"] for t in stats.tokens),
                   "cost": round(sum(priced), 8) if priced else None, "by_model": stats.tokens},
    }


def print_stats(stats: Stats, period: timedelta, *, json_output: bool) -> None:
    from console.display import safe_line
    from console.terminal import emit, out

    document = as_json(stats, period)
    if json_output:
        emit(document)
        return
    out.print(f"since {stats.since:%Y-%m-%d %H:%M %Z}")
    threads = document["threads"]
    out.print("threads: " + (", ".join(f"{status} {n}" for status, n in threads.items()) if threads else "none started"))
    waits = document["gate_waits"]
    if waits["decided"]:
        out.print(f"gate waits: {waits['decided']} decided, median {_span(waits['median_seconds'])}, p95 {_span(waits['p95_seconds'])}")
        for w in waits["by_gate"]:
            out.print(f"  {safe_line(w['graph'])}/{safe_line(w['gate'])}: {w['decided']} decided, median {_span(w['median_seconds'])}, "
                      f"p95 {_span(w['p95_seconds'])}")
    else:
        out.print("gate waits: none decided")
    kinds = document["decisions"]["by_kind"]
    out.print("decisions: " + (", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) if kinds else "none"))
    for d in stats.decisions:
        out.print(f"  {safe_line(d['actor'])}: {d['kind']} {d['count']}", soft_wrap=True)
    out.print("failures:" + (" none" if not stats.failures else ""))
    for f in stats.failures:
        out.print(f"  {f['count']}x {safe_line(f['reason'], 200)}", soft_wrap=True)
    tokens = document["tokens"]
    out.print(f"tokens: {tokens['input_tokens']} in, {tokens['output_tokens']} out" + (f", cost {tokens['cost']:.4f}" if tokens["cost"] is not None else ""))
    for t in stats.tokens:
        cost = f", cost {t['cost']:.4f}" if t["cost"] is not None else ""
        out.print(f"  {safe_line(t['model'])}: {t['calls']} calls, {t['input_tokens']} in, {t['output_tokens']} out{cost}", soft_wrap=True)


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
