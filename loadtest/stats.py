"""What one worker measured, in a form that crosses process boundaries and merges exactly.

Histograms travel as their HdrHistogram encoding and are added after decoding, so merged
percentiles are those of all samples together, not an average of per-worker percentiles.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

MAX_US = 3_600_000_000
"""Largest recordable latency (one hour); larger samples are clamped to it."""

SIGNIFICANT_FIGURES = 3
SECOND_FIGURES = 2
"""Per-second histograms only feed the plot, so they trade precision for size."""

HISTOGRAMS = ("latency", "ack", "connect", "lag")
"""latency: send-to-delivery; ack: send-to-reply; connect: WebSocket handshake;
lag: how late the generator fired a message against its schedule."""


def new_histogram(figures: int = SIGNIFICANT_FIGURES) -> HdrHistogram:
    return HdrHistogram(1, MAX_US, figures)


def record_us(histogram: HdrHistogram, value_us: float) -> None:
    histogram.record_value(int(min(max(value_us, 0), MAX_US)))


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class WorkerReport:
    """Everything a worker sends back at the end; plain data, picklable."""

    histograms: dict[str, bytes]
    seconds: dict[int, tuple[int, bytes]]
    """Second since start -> (deliveries, encoded latency histogram of that second)."""
    sent: dict[tuple[str, str], int]
    """(channel, lane) -> messages fired."""
    accepted: dict[tuple[str, str], int]
    """(channel, lane) -> messages the server confirmed (publish 2xx, op `ok`)."""
    delivered: dict[str, int]
    """lane -> pushes (or replies, where the scenario counts those) received."""
    subscribed: dict[str, int]
    """channel -> connections subscribed when the schedule started."""
    errors: dict[str, int]
    counts: dict[str, int]
    """Scenario counters (reserved units, sold_out, ...) and connect attempts."""
    extra: dict[str, Any]
    """Scenario data merged by the scenario itself (held units per user, acked seqs)."""
    sends_s: float
    """Seconds from start until this worker fired its last message."""
    last_delivery_s: float
    """Seconds from start to the last delivery seen (0 if none)."""
    connect_s: float
    """Seconds the connection phase took."""
    cpu_s: float
    """CPU seconds (user + system) this worker used while sending (over `sends_s`)."""
    cpu_peak: float
    """The largest share of one core this worker used in any one second of the run."""


class Recorder:
    """Live counters of one worker; `report()` freezes them into a WorkerReport."""

    def __init__(self) -> None:
        self.histograms = {name: new_histogram() for name in HISTOGRAMS}
        self.seconds: dict[int, tuple[int, HdrHistogram]] = {}
        self.sent: Counter[tuple[str, str]] = Counter()
        self.accepted: Counter[tuple[str, str]] = Counter()
        self.delivered: Counter[str] = Counter()
        self.subscribed: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        self.start = 0.0
        self.last_delivery = 0.0
        self.counted_total = 0
        """Deliveries counted from raw streams whose lanes are not in `delivered` yet."""

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def delivery(self, lane: str, sent_us: int, received_us: int) -> None:
        """One message received; latency counts from when it was due, not when it left."""
        self.delivered[lane] += 1
        self._observe(1, [(lane, sent_us)], received_us)

    def counted(self, found: int, samples: list[tuple[str, int]], received_us: int) -> None:
        """`found` deliveries read at once from a raw stream, with the latency of `samples`.

        Their lanes reach `delivered` at the end (`add_counts`); the running total and the
        per-second counts are kept live, for progress and the plot.
        """
        self.counted_total += found
        self._observe(found, samples, received_us)

    def _observe(self, found: int, samples: list[tuple[str, int]], received_us: int) -> None:
        now = received_us / 1e6
        self.last_delivery = now
        second = int(now - self.start) if now > self.start else 0
        count, histogram = self.seconds.get(second) or (0, new_histogram(SECOND_FIGURES))
        for _lane, sent_us in samples:
            latency = received_us - sent_us
            record_us(self.histograms["latency"], latency)
            record_us(histogram, latency)
        self.seconds[second] = (count + found, histogram)

    def add_counts(self, lanes: dict[str, int]) -> None:
        """Fold a stream counter's per-lane totals into `delivered`."""
        for lane, count in lanes.items():
            if count:
                self.delivered[lane] += count
                self.counted_total -= count

    def total_delivered(self) -> int:
        return sum(self.delivered.values()) + self.counted_total

    def report(self, *, sends_end: float, connect_s: float, cpu_s: float, cpu_peak: float) -> WorkerReport:
        return WorkerReport(
            histograms={name: h.encode() for name, h in self.histograms.items()},
            seconds={s: (n, h.encode()) for s, (n, h) in self.seconds.items()},
            sent=dict(self.sent),
            accepted=dict(self.accepted),
            delivered=dict(self.delivered),
            subscribed=dict(self.subscribed),
            errors=dict(self.errors),
            counts=dict(self.counts),
            extra=self.extra,
            sends_s=max(0.0, sends_end - self.start),
            last_delivery_s=max(0.0, self.last_delivery - self.start),
            connect_s=connect_s,
            cpu_s=cpu_s,
            cpu_peak=cpu_peak,
        )


@dataclass
class Totals:
    """All workers' reports added together."""

    histograms: dict[str, HdrHistogram] = field(
        default_factory=lambda: {name: new_histogram() for name in HISTOGRAMS}
    )
    seconds: dict[int, tuple[int, HdrHistogram]] = field(default_factory=dict)
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    accepted: Counter[tuple[str, str]] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    subscribed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    extras: list[dict[str, Any]] = field(default_factory=list)
    sends_s: float = 0.0
    last_delivery_s: float = 0.0
    connect_s: float = 0.0
    cpu_s: float = 0.0
    cpu_peak: float = 0.0

    def add(self, report: WorkerReport) -> None:
        for name, encoded in report.histograms.items():
            self.histograms[name].add(HdrHistogram.decode(encoded))
        for second, (count, encoded) in report.seconds.items():
            total, histogram = self.seconds.get(second) or (0, new_histogram(SECOND_FIGURES))
            histogram.add(HdrHistogram.decode(encoded))
            self.seconds[second] = (total + count, histogram)
        self.sent.update(report.sent)
        self.accepted.update(report.accepted)
        self.delivered.update(report.delivered)
        self.subscribed.update(report.subscribed)
        self.errors.update(report.errors)
        self.counts.update(report.counts)
        self.extras.append(report.extra)
        self.sends_s = max(self.sends_s, report.sends_s)
        self.last_delivery_s = max(self.last_delivery_s, report.last_delivery_s)
        self.connect_s = max(self.connect_s, report.connect_s)
        self.cpu_s += report.cpu_s
        self.cpu_peak = max(self.cpu_peak, report.cpu_peak)

    @classmethod
    def merge(cls, reports: list[WorkerReport]) -> Totals:
        totals = cls()
        for report in reports:
            totals.add(report)
        return totals
