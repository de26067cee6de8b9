"""The ceiling of livemart's reservation step: its Lua script driven by redis-benchmark.

Loads a sale into Redis under a throwaway key prefix with livemart's own ledger code,
then runs ``redis-benchmark`` against ``EVALSHA <reserve script>`` (one attempt per
call, random user, reservation id and Idempotency-Key per call) twice: on the hold path
(stock large enough never to run out, so every call takes a unit and records a hold)
and on the sold-out path (stock 0). No Python sits between the clients and Redis, so
this is what one Redis core can do with the same script; livemart's numbers are
measured against it. The prefix's keys are deleted afterwards.

    python benchmarks/flashsale_redis.py --requests 200000 --clients 50
    taskset -c 1 python benchmarks/flashsale_redis.py --pipeline 16   # Redis-side ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
import subprocess
import time
import uuid

import redis.asyncio as aioredis

from commerce.ledger import Snapshot, Terms
from commerce.redis_ledger import SCRIPTS, RedisLedger, SaleKeys
from realtime.redis_batch import Script
from realtime.resp import RespClients

KEY_TTL_MS = 25 * 3600 * 1000


async def prepare(url: str, prefix: str, sale_id: str, stock: int) -> str:
    """Load the sale (and the script) with the ledger's own code; returns the script's SHA1."""
    client, connections = aioredis.Redis.from_url(url), RespClients()
    try:
        ledger = RedisLedger(client, connections, prefix=prefix, key_ttl_ms=KEY_TTL_MS)
        terms = Terms(stock=stock, per_user_limit=10**9, hold_ms=600_000)
        await ledger.load(Snapshot(sale_id, 1, terms), int(time.time() * 1000))
        digest: str = await client.script_load(SCRIPTS["reserve"])
        if digest != Script(SCRIPTS["reserve"]).sha:
            raise RuntimeError("Redis hashed the script differently")
        return digest
    finally:
        await connections.aclose()
        await client.aclose()


async def clean(url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


def run_benchmark(args: argparse.Namespace, digest: str, keys: SaleKeys) -> dict[str, float]:
    now = int(time.time() * 1000)
    command = [
        shutil.which("redis-benchmark") or "redis-benchmark",
        "-h", args.host, "-p", str(args.port),
        "-n", str(args.requests), "-c", str(args.clients), "-P", str(args.pipeline),
        "-r", "1000000000", "--csv",
        "EVALSHA", digest, "4", keys.state, keys.users, keys.deadlines, keys.keys,
        str(KEY_TTL_MS), "r__rand_int__", "u__rand_int__", "1", str(now), "f__rand_int__",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = list(csv.reader(io.StringIO(done.stdout)))
    header, values = rows[0], rows[-1]
    figures = dict(zip(header, values, strict=True))
    return {
        "requests_per_s": float(figures["rps"]),
        "p50_ms": float(figures["p50_latency_ms"]),
        "p99_ms": float(figures["p99_latency_ms"]),
        "max_ms": float(figures["max_latency_ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--requests", type=int, default=200_000, help="calls per path (default 200000)")
    parser.add_argument("--clients", type=int, default=50, help="parallel connections (default 50)")
    parser.add_argument("--pipeline", type=int, default=1, help="calls in flight per connection (default 1)")
    args = parser.parse_args()
    url = f"redis://{args.host}:{args.port}/0"
    prefix = f"lmbench:{uuid.uuid4().hex[:8]}:"
    results: dict[str, object] = {
        "benchmark": "flashsale_redis",
        "script": "commerce/ledger.lua reserve (one attempt per call)",
        "requests": args.requests,
        "clients": args.clients,
        "pipeline": args.pipeline,
    }
    try:
        for path, stock in (("hold", 10**9), ("sold_out", 0)):
            sale_id = f"bench-{path}"
            digest = asyncio.run(prepare(url, prefix, sale_id, stock))
            results[path] = run_benchmark(args, digest, SaleKeys(prefix, sale_id))
    finally:
        results["keys_deleted"] = asyncio.run(clean(url, prefix))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
