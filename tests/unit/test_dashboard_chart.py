"""The overview's throughput chart: stacked bars scaled to the busiest slice, empty slices drawn as
nothing, and the totals the page states beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from levqor.dashboard.charts import AXIS_BOTTOM, HEIGHT, throughput_chart
from levqor.resolvers.overview import ThroughputBucket

START = datetime(2026, 12, 8, 0, 0, tzinfo=UTC)


def bucket(minute: int, succeeded: int = 0, failed: int = 0, cancelled: int = 0) -> ThroughputBucket:
    start = START + timedelta(minutes=minute)
    return ThroughputBucket(start, start + timedelta(minutes=1), succeeded, failed, cancelled)


def test_bars_stack_and_scale_to_the_busiest_slice() -> None:
    chart = throughput_chart([bucket(0, succeeded=6, failed=2), bucket(1), bucket(2, cancelled=4)])
    assert chart.peak == 8
    assert chart.total == {"succeeded": 6, "failed": 2, "cancelled": 4}
    assert [bar.series for bar in chart.bars] == ["succeeded", "failed", "cancelled"]
    succeeded, failed, cancelled = chart.bars
    baseline = HEIGHT - AXIS_BOTTOM
    assert succeeded.y + succeeded.height == baseline  # at the bottom
    assert abs(failed.y + failed.height - succeeded.y) < 0.01  # on top of it
    assert abs(succeeded.height - 3 * failed.height) < 0.01
    assert abs(cancelled.height - 2 * failed.height) < 0.01
    assert cancelled.x > failed.x
    assert succeeded.title == "00:00 to 00:01 UTC: 6 succeeded"


def test_an_empty_window_draws_no_bar() -> None:
    chart = throughput_chart([bucket(n) for n in range(60)])
    assert chart.bars == []
    assert chart.peak == 0
    assert [label.text for label in chart.labels][:2] == ["0", "0"]
    assert throughput_chart([]).bars == []
