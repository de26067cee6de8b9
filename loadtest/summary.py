"""The one JSON object a run ends with; pure arithmetic over merged totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.plan import Plan
from loadtest.stats import Totals


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50/p99/p999/max in milliseconds; nulls when nothing was recorded."""
    if histogram.get_total_count() == 0:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    return {
        "p50": _ms(histogram.get_value_at_percentile(50)),
        "p99": _ms(histogram.get_value_at_percentile(99)),
        "p999": _ms(histogram.get_value_at_percentile(99.9)),
        "max": _ms(histogram.get_max_value()),
    }


def _ms(value_us: int) -> float:
    return round(value_us / 1000, 3)


def per_s(count: int, seconds: float) -> float | None:
    """A rate for reading, or null when no time elapsed (e.g. every worker failed)."""
    return round(count / seconds, 1) if seconds > 0 else None


def ratio(part: int, whole: int) -> float | None:
    """part / whole rounded for reading, or null when nothing was expected."""
    return None if whole == 0 else round(part / whole, 4)


def fanout_expected(accepted: Mapping[tuple[str, str], int], subscribed: Mapping[str, int]) -> dict[str, int]:
    """Per lane, each accepted message times the connections subscribed to its channel."""
    expected: Counter[str] = Counter()
    for (channel, lane), count in accepted.items():
        expected[lane] += count * subscribed.get(channel, 0)
    return dict(expected)


def lanes(
    sent: Mapping[tuple[str, str], int], expected: Mapping[str, int], delivered: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per-lane sent/expected/delivered and loss (negative loss means extra deliveries)."""
    sent_by_lane: Counter[str] = Counter()
    for (_channel, lane), count in sent.items():
        sent_by_lane[lane] += count
    names = sorted(set(sent_by_lane) | set(expected) | set(delivered))
    result = {}
    for lane in names:
        want, got = expected.get(lane, 0), delivered.get(lane, 0)
        loss = ratio(want - got, want)
        result[lane] = {"sent": sent_by_lane[lane], "expected": want, "delivered": got, "loss": loss}
    return result


def build(
    plan: Plan, totals: Totals, expected: Mapping[str, int], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The summary: contract fields first, then diagnostics, then scenario fields."""
    sent = sum(totals.sent.values())
    delivered = sum(totals.delivered.values())
    want = sum(expected.values())
    duration = totals.sends_s
    # Deliveries that trail the schedule stretch the window instead of inflating the rate.
    window = max(duration, totals.last_delivery_s)
    connected = sum(totals.subscribed.values())
    attempts = totals.counts.get("connect_attempts", 0)
    summary: dict[str, Any] = {
        "scenario": plan.scenario,
        "connections": connected,
        "duration_s": round(duration, 3),
        "sent": sent,
        "delivered": delivered,
        "delivered_per_s": per_s(delivered, window),
        "expected": want,
        "delivery_ratio": ratio(delivered, want),
        "latency_ms": percentiles_ms(totals.histograms["latency"]),
        "errors": dict(sorted(totals.errors.items())),
        # Cores' worth of CPU the workers used together while sending; near 1.0 per worker
        # means the generator, not the server, may be what limits the numbers.
        "generator_cpu": round(totals.cpu_s / duration, 3) if duration > 0 else None,
        # The busiest worker's busiest second (1.0 = a whole core): catches bursts, such as
        # a backlog arriving after a stall, that the average hides.
        "generator_cpu_peak": round(totals.cpu_peak, 3),
        # Latency comes from every n-th delivery of listening connections; counts are exact.
        "latency_sample": {
            "every": plan.sample_every,
            "samples": totals.histograms["latency"].get_total_count(),
        },
        "url": plan.http_url,
        "protocol": plan.protocol,
        "workers": plan.workers,
        "rate": plan.rate,
        "sent_per_s": per_s(sent, duration),
        "ack_latency_ms": percentiles_ms(totals.histograms["ack"]),
        "send_lag_ms": percentiles_ms(totals.histograms["lag"]),
        "lanes": lanes(totals.sent, expected, totals.delivered),
        "connect": {
            "attempted": attempts,
            "connected": connected,
            "failed": attempts - connected,
            "per_s": per_s(connected, totals.connect_s),
            "latency_ms": percentiles_ms(totals.histograms["connect"]),
        },
    }
    summary.update(extra)
    return summary
