"""Histogram math and merging across workers."""

from __future__ import annotations

import pickle

from hdrh.histogram import HdrHistogram

from loadtest.stats import MAX_US, Recorder, Totals, new_histogram, record_us
from loadtest.summary import percentiles_ms


def _report_with(latencies_us: list[int], start: float = 1000.0) -> Recorder:
    rec = Recorder()
    rec.start = start
    for i, latency in enumerate(latencies_us):
        received = int((start + i * 0.01) * 1e6) + latency
        rec.delivery("comment", received - latency, received)
    return rec


def test_percentiles_of_a_known_distribution() -> None:
    histogram = new_histogram()
    for value_us in range(1, 10_001):  # 1 us .. 10 ms, uniform
        record_us(histogram, value_us * 1)
    result = percentiles_ms(histogram)
    # three significant figures: within 0.1% of the exact order statistics
    assert abs(result["p50"] - 5.0) <= 0.01  # type: ignore[operator]
    assert abs(result["p99"] - 9.9) <= 0.01  # type: ignore[operator]
    assert abs(result["p999"] - 9.99) <= 0.01  # type: ignore[operator]
    assert abs(result["max"] - 10.0) <= 0.01  # type: ignore[operator]


def test_empty_histogram_reports_nulls() -> None:
    assert percentiles_ms(new_histogram()) == {"p50": None, "p99": None, "p999": None, "max": None}


def test_out_of_range_samples_are_clamped_not_lost() -> None:
    histogram = new_histogram()
    record_us(histogram, -5)
    record_us(histogram, MAX_US * 10)
    assert histogram.get_total_count() == 2
    assert histogram.get_min_value() == 0
    assert histogram.get_max_value() >= MAX_US


def test_merged_reports_equal_one_histogram_of_all_samples() -> None:
    fast = [100 + i for i in range(900)]  # ~0.1 ms
    slow = [50_000 + 10 * i for i in range(100)]  # 50-51 ms
    merged = Totals.merge(
        [
            pickle.loads(
                pickle.dumps(_report_with(fast).report(sends_end=1, connect_s=0, cpu_s=0, cpu_peak=0))
            ),
            _report_with(slow).report(sends_end=1, connect_s=0, cpu_s=0, cpu_peak=0),
        ]
    )
    together = new_histogram()
    for value in fast + slow:
        record_us(together, value)
    assert merged.histograms["latency"].get_total_count() == 1000
    for percentile in (50, 90, 95, 99, 99.9, 100):
        assert merged.histograms["latency"].get_value_at_percentile(percentile) == (
            together.get_value_at_percentile(percentile)
        )
    # p99 sits in the slow worker's samples: averaging per-worker p99s would not get this
    assert merged.histograms["latency"].get_value_at_percentile(99) >= 50_000
    assert merged.delivered == {"comment": 1000}


def test_totals_add_counters_and_take_the_longest_spans() -> None:
    a, b = Recorder(), Recorder()
    for rec, start in ((a, 10.0), (b, 10.0)):
        rec.start = start
    a.sent[("room:1", "comment")] += 3
    b.sent[("room:1", "comment")] += 4
    b.sent[("room:2", "priority")] += 1
    a.errors["timeout"] += 2
    b.errors["timeout"] += 1
    b.errors["closed_1006"] += 1
    a.subscribed["room:1"] = 5
    b.subscribed["room:1"] = 7
    totals = Totals.merge(
        [
            a.report(sends_end=15.0, connect_s=1.5, cpu_s=0.5, cpu_peak=0.4),
            b.report(sends_end=15.5, connect_s=0.5, cpu_s=0.25, cpu_peak=0.9),
        ]
    )
    assert totals.sent == {("room:1", "comment"): 7, ("room:2", "priority"): 1}
    assert totals.errors == {"timeout": 3, "closed_1006": 1}
    assert totals.subscribed == {"room:1": 12}
    assert (totals.sends_s, totals.connect_s) == (5.5, 1.5)
    assert (totals.cpu_s, totals.cpu_peak) == (0.75, 0.9)


def test_per_second_buckets_merge_counts_and_latencies() -> None:
    a, b = Recorder(), Recorder()
    a.start = b.start = 100.0
    a.delivery("comment", 100_000_000, 100_200_000)  # second 0, 200 ms
    b.delivery("comment", 100_000_000, 100_900_000)  # second 0, 900 ms
    b.delivery("priority", 101_000_000, 102_500_000)  # second 2, 1.5 s
    totals = Totals.merge([r.report(sends_end=101, connect_s=0, cpu_s=0, cpu_peak=0) for r in (a, b)])
    assert sorted(totals.seconds) == [0, 2]
    count, histogram = totals.seconds[0]
    assert count == 2
    assert isinstance(histogram, HdrHistogram)
    assert 890_000 <= histogram.get_max_value() <= 910_000
    assert totals.seconds[2][0] == 1
    assert totals.last_delivery_s == 2.5
