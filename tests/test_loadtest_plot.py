"""The --plot file is a real PNG drawn from per-second data."""

from __future__ import annotations

import math
from pathlib import Path

from loadtest.plot import draw, series
from loadtest.stats import Recorder, Totals


def test_plot_writes_a_png(tmp_path: Path) -> None:
    rec = Recorder()
    rec.start = 50.0
    for second in range(5):
        for i in range(20 * (second + 1)):
            sent = int((50 + second) * 1e6) + i * 1000
            rec.delivery("comment", sent, sent + 1000 * (second + 1) + i)
    totals = Totals.merge([rec.report(sends_end=55, connect_s=0, cpu_s=0, cpu_peak=0)])
    assert sorted(totals.seconds) == [0, 1, 2, 3, 4]

    path = tmp_path / "run.png"
    draw(totals.seconds, str(path), title="test")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000  # two axes with lines, not an empty canvas


def test_plot_of_a_run_without_deliveries_still_writes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    draw({}, str(path), title="nothing delivered")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_silent_second_is_zero_delivered_and_a_break_in_latency() -> None:
    rec = Recorder()
    rec.start = 0.0
    rec.delivery("comment", 0, 10_000)  # second 0
    rec.delivery("comment", 2_000_000, 3_500_000)  # second 3, after a stall
    totals = Totals.merge([rec.report(sends_end=3, connect_s=0, cpu_s=0, cpu_peak=0)])
    data = series(totals.seconds)
    assert data.seconds == [0, 1, 2, 3]
    assert data.delivered == [1, 0, 0, 1]
    assert math.isnan(data.p50_ms[1]) and math.isnan(data.p99_ms[2])
    assert 9.9 <= data.p50_ms[0] <= 10.1
    assert 1490 <= data.p99_ms[3] <= 1510
