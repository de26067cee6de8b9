"""Short real `livemart loadtest … --driver native` runs against a real `livemart serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import native
from tests.processes import TEST_SECRET, ProcessGroup

CONTRACT = {
    "scenario", "connections", "duration_s", "sent", "delivered", "delivered_per_s", "expected",
    "delivery_ratio", "latency_ms", "errors",
}  # fmt: skip
FLASHSALE = {"stock", "reserved", "oversold", "duplicates", "attempts_per_s"}

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler to build wsdrive")


def loadtest(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "livemart", "loadtest", *argv, "--secret", TEST_SECRET]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result: dict[str, Any] = json.loads(lines[0])
    assert set(result) >= CONTRACT, CONTRACT - set(result)
    assert result["driver"] == "native"
    assert result["generator_cpu"] is not None and result["driver_cpu_s"] >= 0
    latency = result["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    return result


@pytest.mark.slow
@needs_compiler
def test_flashsale_native_sells_exactly_the_stock(livemart: ProcessGroup, tmp_path: Path) -> None:
    server = livemart()
    out = tmp_path / "summary.json"
    done = loadtest(
        "flashsale", "--driver", "native", "--url", server.url, "--viewers", "50", "--stock", "10",
        "--rate", "500", "--duration", "2", "--drain", "3", "--json", str(out),
    )  # fmt: skip
    result = summary_of(done)
    assert json.loads(out.read_text()) == result
    assert set(result) >= FLASHSALE
    assert (result["scenario"], result["connections"], result["sent"]) == ("flashsale", 50, 1000)
    assert result["delivered"] == result["expected"] == 1000
    assert result["delivery_ratio"] == 1.0
    assert (result["stock"], result["reserved"], result["oversold"], result["duplicates"]) == (10, 10, 0, 0)
    assert result["buyers"] == 10
    assert result["remaining"] == result["remaining_expected"] == 0
    assert result["sold_out"] + result["limit_exceeded"] + result["reserved"] == 1000
    assert result["errors"] == {}
    assert result["attempts_per_s"] > 0


@pytest.mark.slow
@needs_compiler
def test_groups_native_delivers_every_acked_message_to_every_member(livemart: ProcessGroup) -> None:
    server = livemart()
    done = loadtest(
        "groups", "--driver", "native", "--url", server.url, "--viewers", "20", "--groups", "4",
        "--rate", "40", "--duration", "2", "--drain", "5",
    )  # fmt: skip
    result = summary_of(done)
    assert (result["scenario"], result["connections"], result["groups"]) == ("groups", 20, 4)
    assert result["sent"] == 80
    assert result["errors"] == {}
    # Every send acked, and each owed to the five members of its group.
    assert result["expected"] == 80 * 5
    assert result["delivered"] == result["expected"]
    assert result["delivery_ratio"] == 1.0
    seq = result["seq"]
    assert (seq["ack_duplicates"], seq["ack_holes"], seq["ok"]) == (0, 0, True)
    assert seq["gaps"] is None and seq["reordered"] is None  # not checked by the native driver


def test_native_refuses_scenarios_it_cannot_drive() -> None:
    done = loadtest("viewers", "--driver", "native", "--url", "http://127.0.0.1:9", "--api-key", "k")
    assert done.returncode == 2
    assert "--driver native supports the flashsale and groups scenarios, not viewers" in done.stderr
    assert done.stdout == ""


def test_native_without_a_compiler_says_what_to_do(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "CC": "", "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "livemart", "loadtest", "flashsale", "--driver", "native"]
    command += ["--url", "http://127.0.0.1:9", "--secret", TEST_SECRET]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 1
    assert "install gcc" in done.stderr and "--driver python" in done.stderr
