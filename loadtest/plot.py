"""Latency and throughput over the run, one point per second, as a PNG."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Series:
    seconds: list[int]
    delivered: list[int]
    p50_ms: list[float]
    p99_ms: list[float]


def series(seconds: dict[int, tuple[int, HdrHistogram]]) -> Series:
    """One point per second since start, gaps included.

    A second without deliveries is zero delivered and NaN latency (a break in the line),
    so a stall shows as a stall instead of a line drawn across it.
    """
    xs = list(range(max(seconds) + 1)) if seconds else []
    empty = (0, None)
    points = [seconds.get(s, empty) for s in xs]
    return Series(
        seconds=xs,
        delivered=[count for count, _ in points],
        p50_ms=[_ms(h, 50) for _, h in points],
        p99_ms=[_ms(h, 99) for _, h in points],
    )


def _ms(histogram: HdrHistogram | None, percentile: float) -> float:
    if histogram is None or histogram.get_total_count() == 0:
        return math.nan  # no delivery that second, or none of its deliveries was sampled
    return float(histogram.get_value_at_percentile(percentile)) / 1000


def draw(seconds: dict[int, tuple[int, HdrHistogram]], path: str, *, title: str) -> None:
    """p50/p99 delivery latency (ms) and deliveries per second against time since start.

    Uses a bare Figure (Agg rendering through savefig), never pyplot: no display, no
    global figure registry, safe on servers and in CI.
    """
    data = series(seconds)
    figure = Figure(figsize=(9, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(data.seconds, data.p50_ms, marker=".", label="p50")
    top.plot(data.seconds, data.p99_ms, marker=".", label="p99")
    top.set_ylabel("delivery latency (ms)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot(data.seconds, data.delivered, marker=".", color="tab:green")
    bottom.set_ylabel("delivered / s")
    bottom.set_xlabel("seconds since start")
    bottom.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
