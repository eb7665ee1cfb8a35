"""Tokens and cost of a thread's model calls, per step and in total.

SIGNOFF_MODEL_PRICES turns tokens into a cost: a JSON object from model name (as `show`
prints it, `openai:gpt-4o-mini`, or the part after the colon) to its price per million
tokens, `{"input": 0.15, "output": 0.6}` or `[0.15, 0.6]`. Unset: tokens only, cost null.
A call whose model has no price, or whose server reported no usage, has no cost; the total
cost counts only priced calls and says how many were left out.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from checkpoint.settings import SettingsError

Prices = dict[str, tuple[float, float]]

_EXAMPLE = '{"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}}'


def model_prices(env: Any = None) -> Prices:
    """The price table from SIGNOFF_MODEL_PRICES (empty when unset); SettingsError if unusable."""
    raw = ((os.environ if env is None else env).get("SIGNOFF_MODEL_PRICES") or "").strip()
    if not raw:
        return {}
    try:
        document = json.loads(raw)
    except ValueError:
        raise SettingsError(f"SIGNOFF_MODEL_PRICES must be JSON, like {_EXAMPLE}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"SIGNOFF_MODEL_PRICES must be a JSON object from model name to prices, like {_EXAMPLE}")
    prices: Prices = {}
    for model, price in document.items():
        if isinstance(price, dict):
            pair = (price.get("input"), price.get("output"))
        elif isinstance(price, list) and len(price) == 2:
            pair = (price[0], price[1])
        else:
            pair = (None, None)
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 <= p <= 1e6 for p in pair):
            raise SettingsError(f"SIGNOFF_MODEL_PRICES: the price of {str(model)[:60]!r} must be input and output prices per "
                                f"million tokens, numbers from 0 to 1000000, like {_EXAMPLE}")
        prices[str(model)] = (float(pair[0]), float(pair[1]))  # type: ignore[arg-type]
    return prices


def price_of(model: str | None, prices: Prices) -> tuple[float, float] | None:
    if not model:
        return None
    return prices.get(model) or prices.get(model.partition(":")[2] or model)


def call_cost(call: dict[str, Any], prices: Prices) -> float | None:
    """The cost of one call, or None (no price for its model, or no usage reported)."""
    price = price_of(call.get("model"), prices)
    if price is None or (call.get("input_tokens") is None and call.get("output_tokens") is None):
        return None
    return round(((call.get("input_tokens") or 0) * price[0] + (call.get("output_tokens") or 0) * price[1]) / 1e6, 8)


def totals(calls: list[dict[str, Any]], prices: Prices) -> dict[str, Any]:
    """A thread's tokens and cost over all its calls, and by model."""
    by_model: dict[str, dict[str, Any]] = {}
    unpriced = 0
    total_cost = 0.0
    for call in calls:
        name = call.get("model")
        if not name:
            continue  # no model answered: nothing was spent that a server reported
        entry = by_model.setdefault(name, {"model": name, "calls": 0, "input_tokens": 0, "output_tokens": 0, "cost": None})
        entry["calls"] += 1
        entry["input_tokens"] += call.get("input_tokens") or 0
        entry["output_tokens"] += call.get("output_tokens") or 0
        cost = call_cost(call, prices)
        if cost is None:
            unpriced += 1
        else:
            entry["cost"] = round((entry["cost"] or 0.0) + cost, 8)
            total_cost += cost
    return {
        "input_tokens": sum(m["input_tokens"] for m in by_model.values()),
        "output_tokens": sum(m["output_tokens"] for m in by_model.values()),
        "cost": round(total_cost, 8) if prices and len(by_model) and unpriced < sum(m["calls"] for m in by_model.values()) else None,
        "unpriced_calls": unpriced if prices else None,
        "by_model": list(by_model.values()),
    }


def step_json(call: dict[str, Any], prices: Prices) -> dict[str, Any]:
    """One step as `show --json` and the API give it."""
    return {"node": call.get("node"), "model": call.get("model"), "attempts": call.get("attempts"),
            "latency_ms": call.get("latency_ms"), "input_tokens": call.get("input_tokens"),
            "output_tokens": call.get("output_tokens"), "cost": call_cost(call, prices), "error": call.get("error")}
