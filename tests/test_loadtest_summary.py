"""Summary fields and the arithmetic behind delivery ratio, loss and the scenario checks."""

from __future__ import annotations

from loadtest.plan import Member, Plan
from loadtest.scenarios.flashsale import sale_summary
from loadtest.scenarios.groups import seq_summary
from loadtest.stats import Recorder, Totals
from loadtest.summary import build, fanout_expected, lanes, ratio

CONTRACT_FIELDS = {
    "scenario", "connections", "duration_s", "sent", "delivered", "delivered_per_s",
    "expected", "delivery_ratio", "latency_ms", "errors", "generator_cpu",
}  # fmt: skip


def _plan(**fields: object) -> Plan:
    base: dict[str, object] = {
        "scenario": "viewers",
        "http_url": "http://127.0.0.1:1",
        "ws_url": "ws://127.0.0.1:1/ws",
        "protocol": "json",
        "secret": "s",
        "api_key": "k",
        "rate": 10.0,
        "duration": 2.0,
        "ramp": 0.0,
        "drain": 1.0,
        "workers": 1,
        "run_id": "r",
        "members": (Member("u0", "n", 1, "room:1"),),
        "token_ttl_s": 60,
    }
    base.update(fields)
    return Plan(**base)  # type: ignore[arg-type]


def test_expected_is_each_accepted_message_times_its_room_audience() -> None:
    accepted = {("room:1", "comment"): 10, ("room:2", "comment"): 4, ("room:2", "priority"): 2}
    subscribed = {"room:1": 3, "room:2": 5, "room:3": 8}
    assert fanout_expected(accepted, subscribed) == {"comment": 10 * 3 + 4 * 5, "priority": 2 * 5}
    assert fanout_expected({("room:9", "comment"): 5}, subscribed) == {"comment": 0}


def test_ratio_and_lane_loss() -> None:
    assert ratio(45, 50) == 0.9
    assert ratio(0, 0) is None
    assert ratio(2, 3) == 0.6667
    result = lanes(
        {("room:1", "comment"): 10, ("room:1", "priority"): 2},
        {"comment": 30, "priority": 6},
        {"comment": 24, "priority": 6},
    )
    assert result == {
        "comment": {"sent": 10, "expected": 30, "delivered": 24, "loss": 0.2},
        "priority": {"sent": 2, "expected": 6, "delivered": 6, "loss": 0.0},
    }


def test_build_reports_contract_fields_with_consistent_numbers() -> None:
    rec = Recorder()
    rec.start = 100.0
    rec.sent[("room:1", "comment")] = 20
    rec.accepted[("room:1", "comment")] = 20
    rec.subscribed["room:1"] = 4
    rec.counts["connect_attempts"] = 5
    rec.errors["timeout"] = 1
    for i in range(60):
        rec.delivery("comment", 100_000_000 + i * 10_000, 100_000_000 + i * 10_000 + 2_000)
    totals = Totals.merge([rec.report(sends_end=102.0, connect_s=0.5, cpu_s=1.0, cpu_peak=0.7)])
    plan = _plan()
    summary = build(plan, totals, fanout_expected(totals.accepted, totals.subscribed), {"rooms": 1})

    assert summary.keys() >= CONTRACT_FIELDS
    assert summary["scenario"] == "viewers"
    assert summary["connections"] == 4
    assert summary["duration_s"] == 2.0
    assert (summary["sent"], summary["expected"], summary["delivered"]) == (20, 80, 60)
    assert summary["delivery_ratio"] == 0.75
    assert summary["delivered_per_s"] == 30.0
    assert summary["latency_ms"]["p50"] == 2.0
    assert set(summary["latency_ms"]) == {"p50", "p99", "p999", "max"}
    assert summary["errors"] == {"timeout": 1}
    assert summary["generator_cpu"] == 0.5  # 1 CPU second over 2 seconds of sending
    assert summary["generator_cpu_peak"] == 0.7
    assert summary["connect"]["failed"] == 1
    assert summary["connect"]["per_s"] == 8.0
    assert summary["lanes"]["comment"]["loss"] == 0.25
    assert summary["rooms"] == 1


def test_late_deliveries_stretch_the_rate_window() -> None:
    rec = Recorder()
    rec.start = 100.0
    rec.sent[("room:1", "comment")] = 10
    for i in range(10):
        rec.delivery("comment", 100_000_000, 100_000_000 + 500_000 * (i + 1))  # the last at +5 s
    totals = Totals.merge([rec.report(sends_end=101.0, connect_s=0, cpu_s=0, cpu_peak=0)])
    summary = build(_plan(), totals, {"comment": 10}, {})
    assert summary["duration_s"] == 1.0
    assert summary["delivered_per_s"] == 2.0  # 10 over 5 s, not 10 over the 1 s of sending


def test_a_run_where_every_worker_failed_still_summarizes() -> None:
    totals = Totals.merge([])
    totals.errors["worker_failed"] = 2
    summary = build(_plan(), totals, {}, {})
    assert (summary["sent"], summary["delivered"], summary["expected"]) == (0, 0, 0)
    assert summary["delivery_ratio"] is None
    assert summary["delivered_per_s"] is None and summary["generator_cpu"] is None
    assert summary["latency_ms"]["p99"] is None
    assert summary["errors"] == {"worker_failed": 2}


def _buyers(held: dict[str, int]) -> Totals:
    rec = Recorder()
    rec.start = 0.0
    rec.sent[("sale", "reserve")] = 40
    rec.counts["sold_out"] = 25
    rec.counts["limit_exceeded"] = 5
    rec.extra["held"] = held
    return Totals.merge([rec.report(sends_end=2.0, connect_s=0, cpu_s=0, cpu_peak=0)])


def test_flash_sale_fields_when_everything_adds_up() -> None:
    plan = _plan(scenario="flashsale", stock=10, per_user_limit=1)
    result = sale_summary(plan, _buyers({f"u{i}": 1 for i in range(10)}), left=0)
    assert result["stock"] == 10
    assert result["reserved"] == 10
    assert result["oversold"] == 0
    assert result["duplicates"] == 0
    assert result["attempts_per_s"] == 20.0
    assert (result["sold_out"], result["limit_exceeded"]) == (25, 5)
    assert result["remaining"] == result["remaining_expected"] == 0


def test_flash_sale_detects_overselling_and_double_holds() -> None:
    plan = _plan(scenario="flashsale", stock=10, per_user_limit=1)
    held = {f"u{i}": 1 for i in range(10)} | {"u0": 2, "u3": 3, "extra": 1}
    result = sale_summary(plan, _buyers(held), left=0)
    assert result["reserved"] == 14
    assert result["oversold"] == 4
    assert result["duplicates"] == 2
    assert result["remaining_expected"] == -4


def test_group_sequence_checks() -> None:
    a, b = Recorder(), Recorder()
    a.extra["acked"] = {"group:1": [1, 2, 3], "group:2": [1, 2]}
    b.extra["acked"] = {"group:1": [4, 6, 6]}  # 5 never acked, 6 acked twice
    b.counts["seq_gaps"] = 2
    totals = Totals.merge([r.report(sends_end=1, connect_s=0, cpu_s=0, cpu_peak=0) for r in (a, b)])
    result = seq_summary(totals)
    assert result == {"gaps": 2, "reordered": 0, "ack_duplicates": 1, "ack_holes": 1, "ok": False}
    clean = Totals.merge([a.report(sends_end=1, connect_s=0, cpu_s=0, cpu_peak=0)])
    assert seq_summary(clean)["ok"] is True
