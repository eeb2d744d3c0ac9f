"""The health chart's geometry, computed here and drawn by `templates/_chart.html` as inline
SVG: stacked bars of succeeded and failed attempts per hour, and p50 / p99 latency lines on a
second scale. Only numbers and fixed words reach the SVG; its colours come from the style
sheet (classes), as the Content-Security-Policy allows no inline style."""

from __future__ import annotations

from dataclasses import dataclass

from .health import Bucket

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 56, 12, 28  # margins for the axes' labels
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_h: float
    failed_y: float
    failed_h: float
    label: str  # the bar's tooltip (<title>)


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    bars: list[Bar]
    p50: str  # SVG polyline points
    p99: str
    max_count: int
    max_ms: float


def _nice(value: float) -> float:
    """The next round number at or above `value` (1, 2, 5 × 10^n), for an axis."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if value <= factor * step:
            return factor * step
    return 10 * step  # pragma: no cover


def draw(buckets: list[Bucket]) -> Chart:
    count = len(buckets) or 1
    max_count = int(_nice(max((b.succeeded + b.failed for b in buckets), default=0)))
    max_ms = _nice(max((b.p99_ms or 0.0 for b in buckets), default=0.0))
    slot = PLOT_W / count
    bars = []
    p50: list[str] = []
    p99: list[str] = []
    for i, b in enumerate(buckets):
        x = LEFT + i * slot
        ok_h = PLOT_H * b.succeeded / max_count
        failed_h = PLOT_H * b.failed / max_count
        base = TOP + PLOT_H
        hour = i - count + 1
        ago = "this hour" if hour == 0 else f"{-hour} h ago"
        label = (f"{ago}: {b.succeeded} succeeded, {b.failed} failed"
                 + ("" if b.p50_ms is None else f", p50 {b.p50_ms:.0f} ms, p99 {b.p99_ms or 0:.0f} ms"))
        bars.append(Bar(round(x + 1, 2), round(max(slot - 2, 1), 2), round(base - ok_h, 2), round(ok_h, 2),
                        round(base - ok_h - failed_h, 2), round(failed_h, 2), label))
        cx = round(x + slot / 2, 2)
        if b.p50_ms is not None:
            p50.append(f"{cx},{round(base - PLOT_H * min(b.p50_ms, max_ms) / max_ms, 2)}")
        if b.p99_ms is not None:
            p99.append(f"{cx},{round(base - PLOT_H * min(b.p99_ms, max_ms) / max_ms, 2)}")
    return Chart(WIDTH, HEIGHT, LEFT, TOP, PLOT_W, PLOT_H, bars, " ".join(p50), " ".join(p99), max_count,
                 max_ms)
