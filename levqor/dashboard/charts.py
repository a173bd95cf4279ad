"""Throughput and failures over time as a server-drawn SVG bar chart: no script, no chart library.

Each bucket is one stacked bar (succeeded, failed, cancelled from the bottom up); the template draws
the rectangles this module lays out, in a fixed viewBox that the stylesheet scales to the page."""

from __future__ import annotations

from dataclasses import dataclass

from levqor.resolvers.overview import ThroughputBucket

WIDTH = 720  # viewBox units
HEIGHT = 200
AXIS_LEFT = 40  # room for the scale's labels
AXIS_BOTTOM = 20  # room for the time labels
SERIES = ("succeeded", "failed", "cancelled")  # bottom to top
TIME_LABELS = 4  # evenly spaced under the bars


@dataclass(frozen=True, slots=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    title: str  # what a hover (and a screen reader) says


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[Label]
    baseline_y: float
    peak: int
    total: dict[str, int]


def throughput_chart(buckets: list[ThroughputBucket]) -> Chart:
    plot_height = HEIGHT - AXIS_BOTTOM
    peak = max((b.succeeded + b.failed + b.cancelled for b in buckets), default=0)
    scale = (plot_height - 10) / peak if peak else 0.0
    slot = (WIDTH - AXIS_LEFT) / max(1, len(buckets))
    bars: list[Bar] = []
    for index, bucket in enumerate(buckets):
        x = AXIS_LEFT + index * slot + slot * 0.1
        y = float(plot_height)
        for series in SERIES:
            count: int = getattr(bucket, series)
            if count == 0:
                continue
            height = count * scale
            y -= height
            title = f"{bucket.start:%H:%M} to {bucket.end:%H:%M} UTC: {count} {series}"
            bars.append(Bar(series, round(x, 2), round(y, 2), round(slot * 0.8, 2), round(height, 2), title))
    labels = [Label(AXIS_LEFT - 6, 12, str(peak), "end"), Label(AXIS_LEFT - 6, plot_height, "0", "end")]
    if buckets:
        step = max(1, len(buckets) // TIME_LABELS)
        for index in range(0, len(buckets), step):
            x = AXIS_LEFT + (index + 0.5) * slot
            labels.append(Label(round(x, 2), HEIGHT - 4, f"{buckets[index].start:%H:%M}"))
    total = {series: sum(getattr(b, series) for b in buckets) for series in SERIES}
    return Chart(WIDTH, HEIGHT, bars, labels, float(plot_height), peak, total)
