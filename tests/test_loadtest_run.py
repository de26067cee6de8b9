"""A short real `livemart loadtest viewers` run against a real `livemart serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import TEST_API_KEY, TEST_SECRET, ProcessGroup

VIEWERS, ROOMS, RATE, DURATION = 50, 2, 20, 3


@pytest.mark.slow
def test_viewers_run_prints_one_summary_line(livemart: ProcessGroup, tmp_path: Path) -> None:
    server = livemart()
    out = tmp_path / "summary.json"
    command = [
        sys.executable, "-m", "livemart", "loadtest", "viewers", "--url", server.url,
        "--viewers", str(VIEWERS), "--rooms", str(ROOMS), "--rate", str(RATE),
        "--duration", str(DURATION), "--drain", "3", "--secret", TEST_SECRET,
        "--api-key", TEST_API_KEY, "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one JSON line, no progress noise off a terminal
    summary = json.loads(lines[0])
    assert json.loads(out.read_text()) == summary

    sent = RATE * DURATION
    assert summary["scenario"] == "viewers"
    assert summary["connections"] == VIEWERS
    assert summary["sent"] == sent
    assert summary["expected"] == sent * VIEWERS // ROOMS  # each room has half the viewers
    assert summary["delivered"] == summary["expected"]
    assert summary["delivery_ratio"] == 1.0
    assert summary["lanes"]["priority"]["loss"] == 0.0
    assert summary["errors"] == {}
    assert summary["delivered_per_s"] > 0
    assert DURATION - 0.2 <= summary["duration_s"] <= DURATION + 1
    latency = summary["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert summary["generator_cpu"] is not None and summary["generator_cpu"] >= 0
    # Viewers only listen, so they count raw bytes; at this rate every delivery is sampled.
    assert summary["latency_sample"] == {"every": 1, "samples": summary["delivered"]}
