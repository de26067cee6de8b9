"""Tables (markdown) and a plot (PNG) from the side-by-side results; pure formatting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

MIN_RATIO = 0.999
MAX_P99_MS = 250.0


def meets_target(row: dict[str, Any]) -> bool:
    """Issue 2's bar: at least 99.9% delivered and p99 at most 250 ms."""
    if "failed" in row or row.get("delivery_ratio") is None:
        return False
    p99 = row["latency_ms"]["p99"]
    return bool(row["delivery_ratio"] >= MIN_RATIO and p99 is not None and p99 <= MAX_P99_MS)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def load_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | subscribers | msg/s | delivered/s | delivery ratio | p50 ms | p99 ms | p999 ms | max ms "
        "| server CPU | server CPU-s per M deliveries | generator CPU | meets target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for row in rows:
        head = f"| {row['server']} | {row['subscribers']:,} | {row['rate']:g} |"
        if "failed" in row:
            lines.append(f"{head} failed: {row['failed'][:80]} | | | | | | | | | |")
            continue
        lat = row["latency_ms"]
        cells = [
            _num(row["delivered_per_s"]),
            _num(row["delivery_ratio"], 4),
            *(_num(lat[p], 1) for p in ("p50", "p99", "p999", "max")),
            _num(row["server_cpu"], 2),
            _num(row["server_cpu_s_per_million"], 2),
            _num(row["generator_cpu"], 2),
            "yes" if meets_target(row) else "no",
        ]
        lines.append(f"{head} {' | '.join(cells)} |")
    return lines


def idle_table(idle: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | idle connections | RSS before MiB | RSS after MiB | RSS per connection KiB "
        "| connects/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for point in idle:
        if "failed" in point:
            lines.append(f"| {point['server']} | failed: {point['failed'][:80]} | | | | |")
            continue
        lines.append(
            f"| {point['server']} | {point['idle_connections']:,} | {point['rss_before_mib']} "
            f"| {point['rss_after_mib']} | {point['rss_per_connection_kib']} "
            f"| {_num(point['connect_per_s'])} |"
        )
    return lines


def target_table(rows: list[dict[str, Any]], idle: list[dict[str, Any]], server: str) -> list[str]:
    """Issue 2's table for one server: per subscriber count, its best point that meets the bar."""
    rss = next((p.get("rss_per_connection_kib") for p in idle if p["server"] == server), None)
    lines = [
        "| subscribers | best msg/s meeting the bar | deliveries/s | delivery ratio | p99 ms "
        "| server CPU-s per M deliveries | RSS per idle connection KiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mine = [row for row in rows if row["server"] == server]
    for subscribers in sorted({row["subscribers"] for row in mine}):
        passing = [r for r in mine if r["subscribers"] == subscribers and meets_target(r)]
        if not passing:
            lines.append(f"| {subscribers:,} | none | | | | | {_num(rss, 2)} |")
            continue
        best = max(passing, key=lambda r: r["delivered_per_s"])
        cells = [
            f"{subscribers:,}",
            f"{best['rate']:g}",
            _num(best["delivered_per_s"]),
            str(best["delivery_ratio"]),
            str(best["latency_ms"]["p99"]),
            _num(best["server_cpu_s_per_million"], 2),
            _num(rss, 2),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def profile_top(path: Path, count: int = 12) -> dict[str, list[tuple[float, str]]]:
    """The frames where a py-spy profile (collapsed stacks) spent most: own and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if total == 0:
        return {"own": [], "inclusive": []}
    return {
        "own": [(round(n / total, 3), f) for f, n in own.most_common(count)],
        "inclusive": [(round(n / total, 3), f) for f, n in inclusive.most_common(count)],
    }


def profile_section(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        if not row.get("profile"):
            continue
        lines += ["", f"### {row['server']}, {row['subscribers']:,} subscribers x {row['rate']:g} msg/s", ""]
        lines += ["| share (own time) | frame |", "|---:|---|"]
        lines += [f"| {share:.1%} | `{frame}` |" for share, frame in row["profile"]["own"]]
    return ["", "## Server profiles (py-spy, send window)", *lines] if lines else []


def markdown(rows: list[dict[str, Any]], idle: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in meta["load_average"])
    commit = meta["livemart_commit"][:12]
    parts = [
        "# Fan-out side by side",
        "",
        f"Run {meta['started']}, {meta['elapsed_s'] / 60:.1f} min, livemart at {commit}; "
        f"servers pinned to core {meta['server_cpu']}, generator to core {meta['generator_cpu']}; ",
        f"{meta['duration_s']:g} s of publishing per point; "
        f"load average (1/5/15 min) at the start {meta['load_average_start']}, at the end {load}. "
        "Latency is read from every n-th delivery (the `latency_sample` in the JSON); counts are exact. "
        f"Target: delivery ratio ≥ {MIN_RATIO} and p99 ≤ {MAX_P99_MS:g} ms.",
        "",
        "## One room, N subscribers, R messages/s",
        "",
        *load_table(rows),
    ]
    if idle:
        parts += ["", "## Idle subscribed connections", "", *idle_table(idle)]
    parts += profile_section(rows)
    if meta.get("livemart_settings"):
        parts += ["", "livemart settings: " + ", ".join(f"`{s}`" for s in meta["livemart_settings"])]
    for server, reason in meta.get("skipped", {}).items():
        parts += ["", f"{server} was skipped: {reason}"]
    return "\n".join(parts) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Delivered/s and p99 latency per load point, one bar per server."""
    done = [r for r in rows if "failed" not in r]
    servers = list(dict.fromkeys(r["server"] for r in done))
    points = list(dict.fromkeys((r["subscribers"], r["rate"]) for r in done))
    figure = Figure(figsize=(11, 7))
    top, bottom = figure.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        by_point = {(r["subscribers"], r["rate"]): r for r in done if r["server"] == server}
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(points))]
        rates = [by_point[p]["delivered_per_s"] or 0 if p in by_point else 0 for p in points]
        p99s = [by_point[p]["latency_ms"]["p99"] or 0 if p in by_point else 0 for p in points]
        top.bar(xs, rates, width, label=server)
        bottom.bar(xs, p99s, width, label=server)
    top.set_ylabel("deliveries / s")
    top.set_yscale("log")
    top.legend(fontsize=8)
    top.grid(axis="y", alpha=0.3)
    bottom.axhline(MAX_P99_MS, color="red", linewidth=1, linestyle="--", label=f"{MAX_P99_MS:g} ms")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_yscale("log")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(range(len(points)))
    bottom.set_xticklabels([f"{s:,} subs\n{r:g} msg/s" for s, r in points])
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_reports(
    base: Path, rows: list[dict[str, Any]], idle: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """base.json (everything), base.md (tables), base.png (plot)."""

    def named(suffix: str) -> Path:
        return base.with_name(base.name + suffix)  # not with_suffix: names may hold dots

    named(".json").write_text(json.dumps({"meta": meta, "points": rows, "idle": idle}, indent=1) + "\n")
    named(".md").write_text(markdown(rows, idle, meta))
    if any("failed" not in r for r in rows):
        plot(rows, named(".png"), "fan-out: one server core, one generator core")
