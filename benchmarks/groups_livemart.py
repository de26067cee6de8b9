"""Durable group messages per second on one livemart process, sent by the native driver.

Starts `livemart serve` pinned to one core (a throwaway PostgreSQL database by default, or
``--database sqlite``; Redis under a prefix of its own unless ``--no-redis``), creates G
groups of M members over HTTP (member 0 owns the group and invites, the others join by
the invite), then runs wsdrive (benchmarks/native) on the other core: one connection per
member, each subscribed to its group, sending `group.send` to it at R messages/s in all,
round-robin over the members, open loop. The ack is the `{seq}` reply, which the server
sends only once the message is durable, so acks per second are durable messages per
second; ack latency runs from each message's due time.

Each message carries a latency marker, so the pushes every member receives are counted
too (each acknowledged message is owed to the group's M subscribed members). Afterwards
SQL must hold exactly one row per acknowledged message of the run.

With ``--repeat N`` the same server and groups are driven N times in a row (each run
with its own client_msg_ids), and a summary line gives the median and range. Before
each run the database is checkpointed and the script waits (up to a minute) until the
machine is 90 % idle for a second: on a small machine the dirty pages of the previous
run, or of the group set-up, otherwise land in the middle of the next one.
``machine_cores`` is every process's CPU over the run (/proc/stat), the server's
included, so a saturated machine shows.

    python benchmarks/groups_livemart.py --groups 1000 --members 2 --rate 5000 --duration 20 --repeat 5
    python benchmarks/groups_livemart.py --database sqlite --groups 1000 --rate 1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import native
from flashsale_livemart import SECRET, CpuMeter, Serving, pinned, serving

from loadtest.tokens import mint

TOKEN_TTL_S = 3600
SETUP_CONCURRENCY = 32
"""HTTP requests in flight while the groups are made."""
SEND = (
    '{"id":%ID%,"op":"group.send","group":"%ARG%","text":"[lt:m:%DUE%] message %SEQ%",'
    '"client_msg_id":"%KEY%"}'
)
"""`%KEY%` is the run's prefix and the message's number: the rows of this run in SQL."""
SUBSCRIBE = '{"id":%ID%,"op":"subscribe","ch":"group:%ARG%"}'


async def make_groups(url: str, run: str, groups: int, members: int) -> list[tuple[str, str]]:
    """(token, group id) per connection; connection i is member i // groups of group i % groups,
    so consecutive sends go to different groups."""
    tokens = [
        [mint(SECRET, f"gr-{run}-{g}-{m}", f"member {g}.{m}", TOKEN_TTL_S) for m in range(members)]
        for g in range(groups)
    ]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as api:

        async def post(path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                response = await api.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code not in (200, 201):
                raise RuntimeError(f"POST {path} -> {response.status_code} {response.text[:200]}")
            reply: dict[str, Any] = response.json()
            return reply

        async def group(g: int) -> str:
            owner = tokens[g][0]
            group_id = str((await post("/api/groups", owner, {"name": f"bench {run} {g}"}))["id"])
            code = (await post(f"/api/groups/{group_id}/invites", owner, {}))["code"]
            for token in tokens[g][1:]:
                await post("/api/groups/join", token, {"code": code})
            return group_id

        ids = await asyncio.gather(*(group(g) for g in range(groups)))
    return [(tokens[i % groups][i // groups], ids[i % groups]) for i in range(groups * members)]


def write_path(url: str) -> dict[str, float]:
    """The server's running totals of its group write batches (Prometheus text)."""
    text = httpx.get(url + "/metrics", timeout=10.0).text
    wanted = {
        "livemart_group_batch_size_sum": "sends",
        "livemart_group_batch_size_count": "batches",
        "livemart_group_commit_seconds_sum": "batch_s",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            totals[wanted[name]] += float(value)
    return totals


IDLE_SHARE = 0.9
SETTLE_TIMEOUT_S = 60.0


def machine_busy_s() -> float:
    """CPU seconds all cores have spent on anything but idle and I/O wait, so far."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def settle(server: Serving) -> None:
    """Checkpoint, then wait until the machine is mostly idle for a second (bounded)."""
    if server.pg_dsn is not None:
        server.fetch("CHECKPOINT")
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        busy = machine_busy_s()
        time.sleep(1.0)
        if machine_busy_s() - busy <= (1 - IDLE_SHARE) * cores:
            return
    print("groups_livemart: the machine did not become idle; running anyway", file=sys.stderr)


def run_point(
    args: argparse.Namespace, server: Serving, connections: list[tuple[str, str]], run: str
) -> dict[str, Any]:
    settle(server)
    before = write_path(server.url)
    with tempfile.TemporaryDirectory() as tmp:
        tokens, groups = Path(tmp) / "tokens", Path(tmp) / "groups"
        tokens.write_text("".join(token + "\n" for token, _ in connections))
        groups.write_text("".join(group + "\n" for _, group in connections))
        meter = CpuMeter(server)
        machine = [machine_busy_s(), time.monotonic()]

        def ready() -> None:
            meter.mark()
            machine[:] = [machine_busy_s(), time.monotonic()]

        result = native.command(
            [
                "--url", server.url.replace("http://", "ws://") + "/ws", "--conns", str(len(connections)),
                "--tokens", str(tokens), "--args", str(groups), "--key-prefix", run,
                "--setup", SUBSCRIBE, "--template", SEND,
                "--rate", str(args.rate), "--duration", str(args.duration), "--drain", str(args.drain),
                "--markers-per-ok", str(args.members),
            ],
            pinned=pinned(args.generator_core, []),
            timeout_s=args.duration + args.drain + 300,
            on_ready=ready,
        )  # fmt: skip
        result["server_cpu_s"], result["server_cpu"] = meter.read()
        result["machine_cores"] = round((machine_busy_s() - machine[0]) / (time.monotonic() - machine[1]), 2)
    after = write_path(server.url)
    batches = after["batches"] - before["batches"]
    if batches:
        result["write_batches"] = {
            "count": int(batches),
            "mean_size": round((after["sends"] - before["sends"]) / batches, 1),
            "mean_ms": round((after["batch_s"] - before["batch_s"]) / batches * 1000, 2),
        }
    acked = result["outcomes"].get("ok", 0)
    (rows,) = server.fetch("SELECT count(*) FROM group_messages WHERE client_msg_id LIKE $1", f"{run}-%")[0]
    expected = acked * args.members if result["connections"]["failed"] == 0 else None
    result.update(
        groups=args.groups,
        members=args.members,
        durable_per_s=round(acked / result["duration_s"], 1) if result["duration_s"] else None,
        server_cpu_us_per_message=round(result["server_cpu_s"] / acked * 1e6, 1) if acked else None,
        deliveries_expected=expected,
        delivery_ratio=round(result["lanes"]["message"] / expected, 4) if expected else None,
        checks={"acked": acked, "rows": rows, "ok": rows == acked},
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=2, help="members per group, one connection each")
    parser.add_argument("--rate", type=float, default=1000, help="group.send per second, all groups together")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--drain", type=float, default=5, help="seconds to wait for late acks and pushes")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--no-redis", action="store_true", help="in-process broker instead of Redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--generator-core", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs on the same server and groups")
    args = parser.parse_args()
    if args.members < 1 or args.groups < 1:
        parser.error("--groups and --members must be at least 1")
    native.build()
    with serving(
        postgres=args.database == "postgres",
        redis_url=None if args.no_redis else args.redis_url,
        admin_dsn=args.admin_dsn,
        core=args.server_core,
    ) as server:
        run = uuid.uuid4().hex[:8]
        connections = asyncio.run(make_groups(server.url, run, args.groups, args.members))
        results = []
        for index in range(args.repeat):
            result = run_point(args, server, connections, f"{run}r{index}")
            result["backend"] = server.backend
            result["load_average"] = os.getloadavg()
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.repeat > 1:
        print(json.dumps(summary(results)))


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of the runs' headline figures."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "summary": len(results),
        "acked_per_s": spread([r["replied_per_s"] for r in results]),
        "ack_p50_ms": spread([r["latency_ms"]["p50"] for r in results]),
        "ack_p99_ms": spread([r["latency_ms"]["p99"] for r in results]),
        "delivery_p99_ms": spread([r["delivery_latency_ms"]["p99"] for r in results]),
        "server_cpu": spread([r["server_cpu"] for r in results]),
        "server_cpu_us_per_message": spread([r["server_cpu_us_per_message"] for r in results]),
        "machine_cores": spread([r["machine_cores"] for r in results]),
        "all_checks_ok": all(r["checks"]["ok"] and r["delivery_ratio"] == 1.0 for r in results),
    }


if __name__ == "__main__":
    main()
