"""Latency and throughput over the run, one point per second, as a PNG."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from matplotlib.figure import Figure


def draw(seconds: dict[int, tuple[int, HdrHistogram]], path: str, *, title: str) -> None:
    """p50/p99 delivery latency (ms) and deliveries per second against time since start.

    Uses a bare Figure (Agg rendering through savefig), never pyplot: no display, no
    global figure registry, safe on servers and in CI.
    """
    xs = sorted(seconds)
    delivered = [seconds[s][0] for s in xs]
    p50 = [seconds[s][1].get_value_at_percentile(50) / 1000 for s in xs]
    p99 = [seconds[s][1].get_value_at_percentile(99) / 1000 for s in xs]
    figure = Figure(figsize=(9, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(xs, p50, label="p50")
    top.plot(xs, p99, label="p99")
    top.set_ylabel("delivery latency (ms)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot(xs, delivered, color="tab:green")
    bottom.set_ylabel("delivered / s")
    bottom.set_xlabel("seconds since start")
    bottom.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
