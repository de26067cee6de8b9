"""The side-by-side benchmark end to end (livemart only, a tiny point), and its tables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from fanout_report import meets_target, target_table  # noqa: E402


def _row(
    server: str, subscribers: int, rate: float, ratio: float, p99: float, per_s: float
) -> dict[str, Any]:
    return {
        "server": server,
        "subscribers": subscribers,
        "rate": rate,
        "delivery_ratio": ratio,
        "delivered_per_s": per_s,
        "latency_ms": {"p50": p99 / 2, "p99": p99, "p999": p99, "max": p99},
        "server_cpu_s_per_million": 0.5,
    }


def test_the_target_needs_both_delivery_and_latency() -> None:
    assert meets_target(_row("a", 10, 1, 0.999, 250, 1))
    assert not meets_target(_row("a", 10, 1, 0.9989, 10, 1))
    assert not meets_target(_row("a", 10, 1, 1.0, 250.1, 1))
    assert not meets_target({"server": "a", "subscribers": 10, "rate": 1, "failed": "boom"})


def test_target_table_picks_the_best_passing_point_per_audience() -> None:
    rows = [
        _row("lm", 1000, 200, 1.0, 40, 200_000),
        _row("lm", 1000, 400, 1.0, 300, 390_000),  # faster, but p99 over the bar
        _row("lm", 5000, 200, 0.99, 40, 990_000),  # lost too much
        _row("peer", 1000, 800, 1.0, 10, 800_000),  # another server
    ]
    lines = target_table(rows, [{"server": "lm", "rss_per_connection_kib": 8.25}], "lm")
    assert lines[2].split(" | ")[:3] == ["| 1,000", "200", "200,000"]
    assert lines[2].endswith("| 8.25 |")
    assert lines[3].startswith("| 5,000 | none |")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is needed to pin cores")
def test_one_tiny_point_end_to_end(tmp_path: Path) -> None:
    command = [
        sys.executable, str(BENCHMARKS / "side_by_side.py"), "--servers", "livemart-embedded",
        "--subscribers", "50", "--rates", "20", "--duration", "2", "--drain", "2", "--idle", "50",
        "--out", str(tmp_path), "--name", "smoke",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "50 subscribers x 20 msg/s" in done.stderr  # progress is printed
    result = json.loads((tmp_path / "smoke.json").read_text())
    (point,) = result["points"]
    assert point["server"] == "livemart-embedded"
    assert point["subscribers"] == 50
    assert point["accepted"] == point["sent"] == 40
    assert point["delivered"] == point["expected"] == 40 * 50
    assert point["latency_sample"] == {"every": 1, "samples": 2000}
    assert point["server_cpu"] > 0 and point["generator_cpu"] > 0
    (idle,) = result["idle"]
    assert idle["idle_connections"] == 50 and idle["rss_after_mib"] >= idle["rss_before_mib"]
    table = (tmp_path / "smoke.md").read_text()
    assert "| livemart-embedded | 50 | 20 |" in table
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
