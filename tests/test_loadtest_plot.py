"""The --plot file is a real PNG drawn from per-second data."""

from __future__ import annotations

from pathlib import Path

from loadtest.plot import draw
from loadtest.stats import Recorder, Totals


def test_plot_writes_a_png(tmp_path: Path) -> None:
    rec = Recorder()
    rec.start = 50.0
    for second in range(5):
        for i in range(20 * (second + 1)):
            sent = int((50 + second) * 1e6) + i * 1000
            rec.delivery("comment", sent, sent + 1000 * (second + 1) + i)
    totals = Totals.merge([rec.report(sends_end=55, run_end=56, connect_s=0, cpu_s=0)])
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
