"""One flash-sale run against a real livemart process: `livemart loadtest flashsale` end to end.

Starts `livemart serve` pinned to one core (Redis + a throwaway PostgreSQL database by
default, or ``--embedded``: in-process ledger and SQLite), runs the load generator pinned
to another core, and prints the generator's JSON summary with the server's CPU time
added. Everything it created (database, Redis keys under its own prefix) is removed.

    python benchmarks/flashsale_livemart.py --viewers 1000 --rate 5000 --duration 10 --stock 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import redis

SECRET = "flashsale-benchmark-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, command: list[str]) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"livemart exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("livemart did not become ready")


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--stock", type=int, default=100)
    parser.add_argument("--protocol", choices=["json", "msgpack"], default="json")
    parser.add_argument("--embedded", action="store_true", help="no Redis: in-process ledger and SQLite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--generator-core", type=int, default=1)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="lmbench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(LIVEMART_SECRET=SECRET)
    database = f"lmbench_{run}"
    prefix = f"lmbench:{run}:"
    if args.embedded:
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        asyncio.run(create_database(args.admin_dsn, database))
        base = args.admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        env.update(DATABASE_URL=f"{base}/{database}", REDIS_URL=args.redis_url, LIVEMART_REDIS_PREFIX=prefix)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "livemart", "serve", "--port", str(port), "--log-level", "warning"]
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(pinned(args.server_core, serve), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, server)
        proc = psutil.Process(server.pid)
        target = proc.children()[0] if proc.name() == "taskset" and proc.children() else proc
        before = target.cpu_times()
        summary_file = workdir / "summary.json"
        loadtest = [
            sys.executable, "-m", "livemart", "loadtest", "flashsale", "--url", url,
            "--viewers", str(args.viewers), "--rate", str(args.rate), "--duration", str(args.duration),
            "--stock", str(args.stock), "--protocol", args.protocol, "--json", str(summary_file),
        ]  # fmt: skip
        subprocess.run(
            pinned(args.generator_core, loadtest),
            env={**env, "LIVEMART_SECRET": SECRET},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=args.duration + 300,
        )
        after = target.cpu_times()
        summary = json.loads(summary_file.read_text())
        summary["server_cpu_s"] = round(after.user + after.system - before.user - before.system, 2)
        summary["backend"] = "embedded" if args.embedded else "redis+postgresql"
        summary["load_average"] = os.getloadavg()
        print(json.dumps(summary))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if not args.embedded:
            asyncio.run(drop_database(args.admin_dsn, database))
            delete_prefix(args.redis_url, prefix)


if __name__ == "__main__":
    main()
