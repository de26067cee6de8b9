"""Scale-out: N livemart processes on one Redis against one, with every party's CPU accounted.

Issue 8 asks what a second process buys on this machine. For each point, N `livemart
serve` processes start fresh on their own ports, sharing one Redis (under a private key
prefix) and one SQLite file; S subscribers are split evenly over them, one `wsdrive
listen` (benchmarks/native) per process; R messages/s are published over HTTP
(`POST /api/publish`) to the first process only, so every other process gets them through
Redis. Publishing is open loop with latency markers, as in fanout_load.py.

On a 2-core machine the servers, the driver, this process (the publisher) and Redis share
the cores, so nothing is pinned by default (`--pin servers` pins server i to core i and
lets the rest float) and the CPU of every party is read over the point: each server and
driver with psutil, this process with getrusage, Redis from its own `INFO cpu` (the
Redis is shared, so that counts everyone's traffic), and the whole machine from
/proc/stat; "others" is the machine minus all of those. Writes
results/NAME.{json,md,png}; prints progress on stderr.

    .venv/bin/python benchmarks/scale_out.py       # 5,000 subs x 100/200 msg/s, N = 1, 2: ~1.5 min
    .venv/bin/python benchmarks/scale_out.py --subscribers 1000 --rates 50 \
        --duration 3 --name scale_out_check                          # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import native
import psutil
import redis.asyncio
import uvloop
from fanout_load import (
    NATIVE_LISTEN_MARGIN_S,
    NATIVE_SAMPLES_PER_S,
    START_DELAY_S,
    Livemart,
    NativeListeners,
    Publisher,
    cpu_s,
    own_cpu_s,
)
from fanout_report import MAX_P99_MS, _num
from matplotlib.figure import Figure
from side_by_side import (
    API_KEY,
    REDIS_URL,
    RESULTS,
    SECRET,
    Running,
    Server,
    delete_redis_keys,
    parse_list,
    progress,
    snapshot,
)

from loadtest.schedule import run_open_loop

PARTIES = ("servers", "driver", "publisher", "redis", "others")
"""Where the machine's CPU went, in report order; "others" is everything not listed."""
RECEIVED = re.compile(r"received=(\d+)")
"""The count in a wsdrive progress line."""
CORES = os.cpu_count() or 1
SERVE = [sys.executable, "-m", "livemart", "serve", "--host", "127.0.0.1", "--port"]


@dataclass
class Reading:
    """Cumulative CPU-seconds of every party at one instant."""

    servers: list[float]
    driver: float
    publisher: float
    redis: float
    machine: float

    def minus(self, before: Reading) -> dict[str, Any]:
        """CPU-seconds spent by each party between `before` and this reading."""
        servers = [b - a for a, b in zip(before.servers, self.servers, strict=True)]
        driver, publisher = self.driver - before.driver, self.publisher - before.publisher
        redis_s, machine = self.redis - before.redis, self.machine - before.machine
        return {
            "servers": servers,
            "driver": driver,
            "publisher": publisher,
            "redis": redis_s,
            "others": machine - sum(servers) - driver - publisher - redis_s,
            "machine": machine,
        }


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has spent not idle since boot."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


async def redis_cpu_s(client: redis.asyncio.Redis) -> float:
    """Redis's own user + system CPU (its getrusage, via INFO): no need to find its pid."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def read_all(servers: list[psutil.Process], driver_s: float, client: redis.asyncio.Redis) -> Reading:
    return Reading(
        servers=[cpu_s(s) for s in servers],
        driver=driver_s,
        publisher=own_cpu_s(),
        redis=await redis_cpu_s(client),
        machine=machine_busy_s(),
    )


def process_table() -> dict[int, tuple[str, float]]:
    """Every process's name and lifetime CPU-seconds, to name what "others" was."""
    table = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            table[proc.pid] = (proc.info["name"], times.user + times.system)
    return table


def busiest(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], skip: set[int], seconds: float
) -> list[tuple[str, float]]:
    """The other processes that used the most CPU in between, in cores (at most three, >= 0.01)."""
    used = [
        (name, (cpu - before.get(pid, (name, 0.0))[1]) / seconds)
        for pid, (name, cpu) in after.items()
        if pid not in skip
    ]
    return [(name, round(c, 2)) for name, c in sorted(used, key=lambda u: -u[1])[:3] if c >= 0.01]


def per_second(spent: dict[str, Any], seconds: float) -> dict[str, Any]:
    """CPU-seconds per second (1.0 is one whole core) from `minus`."""
    cores: dict[str, Any] = {k: round(v / seconds, 3) for k, v in spent.items() if k != "servers"}
    cores["servers"] = [round(v / seconds, 3) for v in spent["servers"]]
    return cores


def per_million(spent: dict[str, Any], delivered: int) -> dict[str, Any]:
    """CPU-seconds per million deliveries from `minus`."""
    scale = 1e6 / delivered
    out: dict[str, Any] = {k: round(v * scale, 3) for k, v in spent.items() if k != "servers"}
    out["servers"] = [round(v * scale, 3) for v in spent["servers"]]
    return out


def split(total: int, parts: int) -> list[int]:
    """`total` as evenly as possible over `parts`, the remainder on the first ones."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def worst(latencies: list[dict[str, Any]]) -> dict[str, Any]:
    """Each percentile's largest value over the processes' audiences.

    A percentile of the whole audience lies between the smallest and the largest of the
    parts' percentiles, so this is an upper bound on it (the drivers report percentiles,
    not samples, so the exact merge is not available).
    """
    keys = ("p50", "p99", "p999", "max")
    values = {k: [lat[k] for lat in latencies if lat.get(k) is not None] for k in keys}
    return {k: max(v) if v else None for k, v in values.items()}


async def measure(
    running: list[Running], subscribers: int, rate: float, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """One point on already started servers: open, publish, drain, read every party's CPU."""
    targets = [Livemart(r.url) for r in running]
    servers = [psutil.Process(r.proc.pid) for r in running]
    listen_s = START_DELAY_S + args.duration + NATIVE_LISTEN_MARGIN_S
    shares = split(subscribers, len(running))
    listeners = [
        NativeListeners(t, math.ceil(share * rate / NATIVE_SAMPLES_PER_S), listen_s, args.drain)
        for t, share in zip(targets, shares, strict=True)
    ]
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    ticker: asyncio.Task[None] | None = None
    publisher = Publisher(targets[0])
    try:
        redis_pid = int((await client.info("server"))["process_id"])
        await targets[0].prepare()  # the room, created on the process that publishes
        for target in targets[1:]:
            target.channel = targets[0].channel
        progress(f"{label}: opening {' + '.join(f'{s:,}' for s in shares)} subscribers")
        began = time.monotonic()
        await asyncio.gather(*(ln.open(share) for ln, share in zip(listeners, shares, strict=True)))
        connect_s = time.monotonic() - began
        subscribed = [ln.subscribed for ln in listeners]

        start = time.time() + START_DELAY_S
        await asyncio.sleep(START_DELAY_S)
        ticker = asyncio.create_task(tick(label, listeners, lambda: publisher.accepted))
        first = await read_all(servers, sum(ln.cpu_s() for ln in listeners), client)
        everyone = process_table()
        sent = await run_open_loop(rate=rate, duration=args.duration, start=start, fire=publisher.fire)
        sends_end = time.time()
        sent_reading = await read_all(servers, sum(ln.cpu_s() for ln in listeners), client)
        ours = {os.getpid(), *(s.pid for s in servers), *(ln.driver.pid for ln in listeners if ln.driver)}
        others = busiest(everyone, process_table(), ours | {redis_pid}, sends_end - start)
        deadline = sends_end + args.drain
        unanswered = await publisher.wait(deadline)  # may have been broadcast: owed, like an accepted one
        owed = publisher.accepted + unanswered
        await asyncio.gather(
            *(ln.drain(owed * n, deadline, sends_end) for ln, n in zip(listeners, subscribed, strict=True))
        )
        end = time.time()
        # The drivers have exited by now; each reported its own lifetime CPU.
        last = await read_all(servers, sum(float(ln.result["cpu_s"]) for ln in listeners), client)
        load = os.getloadavg()
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        await publisher.cancel()
        for ln in listeners:
            await ln.close()
        for target in targets:
            await target.close()
        await client.aclose()
    send_s = sends_end - start
    delivered = sum(ln.delivered for ln in listeners)
    expected = owed * sum(subscribed)
    window = max(send_s, max(ln.last_delivery for ln in listeners) - start)
    latencies = [ln.latency()[0] for ln in listeners]
    errors: dict[str, int] = {}
    for ln in listeners:
        for code, count in ln.errors.items():
            errors[code] = errors.get(code, 0) + count
    return {
        "processes": len(running),
        "subscribers": sum(subscribed),
        "subscribers_per_process": subscribed,
        "rate": rate,
        "duration_s": round(send_s, 3),
        "sent": sent,
        "accepted": publisher.accepted,
        "publish_failed": publisher.failed,
        "publish_unanswered": unanswered,
        "expected": expected,
        "delivered": delivered,
        "delivered_per_process": [ln.delivered for ln in listeners],
        "delivered_per_s": round(delivered / window, 1) if window > 0 else None,
        "delivery_ratio": round(delivered / expected, 4) if expected else None,
        "latency_ms": worst(latencies),
        "latency_ms_per_process": latencies,
        "latency_sample": [ln.latency()[1] for ln in listeners],
        "cpu": per_second(sent_reading.minus(first), send_s),
        "cpu_s_per_million": per_million(last.minus(first), delivered) if delivered else None,
        "others_largest": others,
        "load_average": [round(x, 2) for x in load],
        "drain_s": round(end - sends_end, 3),
        "connect_s": round(connect_s, 3),
        "errors": errors,
    }


async def tick(label: str, listeners: list[NativeListeners], accepted: Callable[[], int]) -> None:
    """A progress line a second: publishes answered, deliveries counted so far."""
    began = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        received = 0
        for ln in listeners:
            lines = ln.driver.log if ln.driver is not None else []
            found = RECEIVED.search(lines[-1]) if lines else None
            received += int(found[1]) if found else 0
        progress(
            f"{label}: {time.monotonic() - began:.0f} s, published {accepted():,}, received {received:,}"
        )


def start_servers(count: int, pin: str, server: Server, logs: Path) -> list[Running]:
    """`count` fresh processes, one after another (the first migrates the schema)."""
    running: list[Running] = []
    try:
        for i in range(count):
            cpu = str(i % CORES) if pin == "servers" else f"0-{CORES - 1}"
            entry = (
                server
                if i == 0
                else replace(server, command=lambda port: [*SERVE, str(port), "--no-migrate"])
            )
            running.append(Running(entry, cpu, logs / f"server{i}.log"))
            running[-1].wait_ready()
    except BaseException:
        for r in running:
            r.stop()
        raise
    return running


def one_point(
    count: int, subscribers: int, rate: int, args: argparse.Namespace, server: Server, logs: Path
) -> dict[str, Any]:
    """A point on fresh servers; a failure becomes a row that says so, with the servers' last words."""
    label = f"{count} process{'es' if count > 1 else ''}, {subscribers:,} x {rate} msg/s"
    progress(f"{label}: starting")
    for old in logs.glob("server*.log"):
        old.unlink()
    try:
        running = start_servers(count, args.pin, server, logs)
        try:
            row = uvloop.run(measure(running, subscribers, rate, args, label))
        finally:
            for r in running:
                r.stop()
    except (RuntimeError, OSError, KeyError, redis.RedisError) as exc:
        progress(f"{label}: FAILED: {exc}")
        for log in sorted(logs.glob("server*.log")):
            tail = log.read_text(errors="replace").splitlines()[-10:]
            progress(f"{log.name}, last lines:\n" + "\n".join(tail))
        return {"processes": count, "subscribers": subscribers, "rate": rate, "failed": str(exc)[:300]}
    cpu = row["cpu"]
    progress(
        f"{label}: {row['delivered_per_s']:,.0f} deliveries/s, ratio {row['delivery_ratio']}, "
        f"p99 {row['latency_ms']['p99']} ms; cores: servers {'+'.join(f'{c:.2f}' for c in cpu['servers'])}, "
        f"driver {cpu['driver']:.2f}, publisher {cpu['publisher']:.2f}, Redis {cpu['redis']:.2f}, "
        f"others {cpu['others']:.2f} ({', '.join(f'{n} {c:.2f}' for n, c in row['others_largest']) or '-'}), "
        f"load {row['load_average'][0]}"
    )
    return row


def _each(values: list[float]) -> str:
    return " + ".join(f"{v:.2f}" for v in values)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The two tables: deliveries with CPU in cores, then CPU-seconds per million deliveries."""
    baseline = {(r["subscribers"], r["rate"]): r for r in rows if r["processes"] == 1 and "failed" not in r}
    speed = [
        "| processes | subscribers | msg/s | delivered/s | vs 1 process | ratio | p50 ms | p99 ms "
        "| servers (each) | driver | publisher | Redis | others | machine | load 1 min | largest others |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cost = [
        "| processes | subscribers | msg/s | servers (each) | servers | driver | publisher | Redis "
        "| others | machine |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        head = f"| {row['processes']} | {row['subscribers']:,} | {row['rate']:g} |"
        if "failed" in row:
            speed.append(f"{head} failed: {row['failed'][:80]} |" + " |" * 12)
            continue
        base = baseline.get((row["subscribers"], row["rate"]))
        times = row["delivered_per_s"] / base["delivered_per_s"] if base and base["delivered_per_s"] else None
        cpu, lat = row["cpu"], row["latency_ms"]
        cells = [
            _num(row["delivered_per_s"]),
            f"{times:.2f}x" if times else "-",
            _num(row["delivery_ratio"], 4),
            _num(lat["p50"]),
            _num(lat["p99"]),
            _each(cpu["servers"]),
            *(_num(cpu[k], 2) for k in ("driver", "publisher", "redis", "others", "machine")),
            _num(row["load_average"][0], 2),
            ", ".join(f"{name} {c:.2f}" for name, c in row["others_largest"]) or "-",
        ]
        speed.append(f"{head} {' | '.join(cells)} |")
        per_m = row["cpu_s_per_million"]
        if per_m:
            parts = [_each(per_m["servers"]), _num(sum(per_m["servers"]), 2)]
            parts += [_num(per_m[k], 2) for k in ("driver", "publisher", "redis", "others", "machine")]
            cost.append(f"{head} {' | '.join(parts)} |")
    load = ", ".join(f"{x:.2f}" for x in meta["load_average"])
    placement = (
        "server i pinned to core i, the generator and Redis floating"
        if meta["pin"] == "servers"
        else "nothing pinned"
    )
    return "\n".join(
        [
            "# Scale-out: livemart processes on one Redis",
            "",
            f"Run {meta['started']}, {meta['elapsed_s'] / 60:.1f} min, "
            f"livemart at {meta['livemart_commit'][:12]}, "
            f"{meta['cores']} cores, {placement}; {meta['duration_s']:g} s of publishing per point, "
            f"to the first process over HTTP; the subscribers split evenly, one wsdrive per process. "
            f"Load average (1/5/15 min) at the start {meta['load_average_start']}, at the end {load}.",
            "",
            "CPU in cores (1.0 = one core) over the send window. driver: the wsdrive processes; "
            "publisher: this script (HTTP publishes, the open loop); Redis: its own `INFO cpu`, "
            "which counts every client of that shared Redis; machine: all non-idle CPU (/proc/stat); "
            "others: machine minus the listed parties (other programs, and kernel work not charged "
            "to a process; the largest other processes are named). p50/p99: the worst process's "
            "audience, an upper bound on the whole audience's percentile.",
            "",
            *speed,
            "",
            "## CPU-seconds per million deliveries",
            "",
            "From the start of publishing to the end of the drain.",
            "",
            *cost,
            "",
        ]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Deliveries/s, p99, and the cores each party used, one bar per process count per point."""
    done = [r for r in rows if "failed" not in r]
    counts = sorted({r["processes"] for r in done})
    points = list(dict.fromkeys((r["subscribers"], r["rate"]) for r in done))
    figure = Figure(figsize=(11, 10))
    top, middle, bottom = figure.subplots(3, 1, sharex=True)
    width = 0.8 / len(counts)
    colors = dict(zip(PARTIES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:gray"), strict=True))
    for i, count in enumerate(counts):
        by_point = {(r["subscribers"], r["rate"]): r for r in done if r["processes"] == count}
        xs = [j + (i - (len(counts) - 1) / 2) * width for j in range(len(points))]
        mine = [by_point.get(p) for p in points]
        name = f"{count} process{'es' if count > 1 else ''}"
        top.bar(xs, [r["delivered_per_s"] if r else 0 for r in mine], width, label=name)
        middle.bar(xs, [r["latency_ms"]["p99"] or 0 if r else 0 for r in mine], width, label=name)
        below = [0.0] * len(points)
        for party in PARTIES:
            used = [
                (sum(r["cpu"]["servers"]) if party == "servers" else max(0.0, r["cpu"][party])) if r else 0.0
                for r in mine
            ]
            bottom.bar(xs, used, width, bottom=below, color=colors[party], label=party if i == 0 else None)
            below = [b + c for b, c in zip(below, used, strict=True)]
        for x in xs:
            bottom.text(x, 0.02, str(count), ha="center", fontsize=8, color="white")
    top.set_ylabel("deliveries / s")
    top.legend(fontsize=8)
    top.grid(axis="y", alpha=0.3)
    middle.axhline(MAX_P99_MS, color="red", linewidth=1, linestyle="--")
    middle.set_ylabel("p99 latency (ms)")
    middle.grid(axis="y", alpha=0.3)
    bottom.axhline(CORES, color="black", linewidth=1, linestyle="--")
    bottom.set_ylabel(f"cores used of {CORES} (bar label: processes)")
    bottom.set_ylim(0, CORES * 1.3)
    bottom.legend(fontsize=8, ncols=len(PARTIES), loc="upper left")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(range(len(points)))
    bottom.set_xticklabels([f"{s:,} subs\n{r:g} msg/s" for s, r in points])
    figure.suptitle("scale-out: livemart processes on one Redis, every party's CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="livemart process counts to compare")
    parser.add_argument("--subscribers", default="5000", help="subscriber counts (one room, split evenly)")
    parser.add_argument("--rates", default="100,200", help="messages per second into the room")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per point")
    parser.add_argument("--drain", type=float, default=5.0, help="max seconds for late deliveries")
    parser.add_argument(
        "--pin",
        choices=("none", "servers"),
        default="none",
        help="none: the kernel places everything; servers: server i on core i, the rest floating",
    )
    parser.add_argument("--livemart-rev", default="HEAD", help="git revision of livemart to measure")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    parser.add_argument("--name", default="scale_out", help="base name of the result files")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers and drivers inherit it
    os.environ.update(LIVEMART_SECRET=SECRET, LIVEMART_API_KEY=API_KEY)  # read by fanout_load.Livemart
    run_id = secrets.token_hex(4)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    progress(f"load average {load_start}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        source = Path(tmp) / "livemart"
        commit = snapshot(args.livemart_rev, source)
        progress(f"livemart at {commit[:12]}")
        native.build()  # now, not in the middle of a point
        server = Server(
            "livemart",
            "livemart",
            lambda port: [*SERVE, str(port)],
            {
                "PYTHONPATH": str(source),
                "LIVEMART_SECRET": SECRET,
                "LIVEMART_API_KEY": API_KEY,
                "DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'livemart.db'}",
                "LIVEMART_HISTORY_TTL_S": "600",
                "REDIS_URL": REDIS_URL,
                "LIVEMART_REDIS_PREFIX": f"bench-{run_id}:",
            },
            cwd=source,
        )
        # Point by point, every process count in turn, so drifting machine load touches all.
        for subscribers in parse_list(args.subscribers):
            for rate in parse_list(args.rates):
                for count in parse_list(args.processes):
                    rows.append(one_point(count, subscribers, rate, args, server, Path(tmp)))
    delete_redis_keys(run_id)
    elapsed = time.time() - began
    meta = {
        "elapsed_s": round(elapsed, 1),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(began)),
        "load_average_start": load_start,
        "load_average": os.getloadavg(),
        "duration_s": args.duration,
        "drain_s": args.drain,
        "pin": args.pin,
        "cores": CORES,
        "publish_to": "the first process",
        "redis_cpu": "INFO cpu (used_cpu_user + used_cpu_sys) of the shared Redis",
        "livemart_commit": commit,
    }
    base = args.out / args.name
    base.with_name(base.name + ".json").write_text(
        json.dumps({"meta": meta, "points": rows}, indent=1) + "\n"
    )
    base.with_name(base.name + ".md").write_text(markdown(rows, meta))
    if any("failed" not in r for r in rows):
        plot(rows, base.with_name(base.name + ".png"))
    progress(f"done in {elapsed / 60:.1f} min: {base}.md, .png, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
