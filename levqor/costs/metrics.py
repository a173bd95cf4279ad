"""The cost counters a server process keeps itself (the database's figures are read at scrape time)."""

from __future__ import annotations

from prometheus_client import Counter

# Registered with `/metrics`'s registry by `build_metrics` (or, with several server processes,
# written to the shared directory every process's scrape sums).
BUDGET_REFUSALS = Counter(
    "levqor_budget_refusals",
    "Submits refused because a budget had no room for them (402 budget_exceeded), by subject.",
    ["subject"],
    registry=None,
)
