"""Spend forecasting: needs a forecasting library this machine may not have installed."""

import prophet_forecasting  # noqa: F401 - not installed here: the graph reports this error, the others still run

graph = None
