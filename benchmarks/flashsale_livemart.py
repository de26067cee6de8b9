"""One flash-sale run against a real livemart process, with the Python or the native generator.

Starts `livemart serve` pinned to one core (Redis + a throwaway PostgreSQL database by
default, or ``--embedded``: in-process ledger and SQLite) and drives it from another core:

- ``--driver python`` (default): `livemart loadtest flashsale`, whose JSON summary is
  printed with the server's CPU time added;
- ``--driver native``: the C driver wsdrive (benchmarks/native) sends the `reserve`
  commands over WebSocket at the rate, open loop, one buyer per connection, and keeps every
  granted reservation; the run is then checked against them and against SQL: exactly
  `stock` units held, nobody over the per-user limit, no reservation twice, `remaining` 0.

Everything it created (database, Redis keys under its own prefix) is removed.

    python benchmarks/flashsale_livemart.py --viewers 1000 --rate 5000 --duration 10 --stock 100
    python benchmarks/flashsale_livemart.py --driver native --viewers 1000 --rate 20000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import native
import psutil
import redis

from loadtest.tokens import mint

SECRET = "flashsale-benchmark-secret-0123456789abcdef"
TOKEN_TTL_S = 3600
PER_USER_LIMIT = 1
HOLD_SECONDS = 3600
"""Holds outlast the run and the checks, so no expiry returns stock while they look."""


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


@dataclass
class Serving:
    """A running `livemart serve` and where its data lives."""

    url: str
    process: psutil.Process
    backend: str
    """e.g. "redis+postgresql", "sqlite"."""
    env: dict[str, str]
    """The server's environment (a generator mints tokens with its secret)."""
    pg_dsn: str | None
    """asyncpg DSN of the throwaway database, or None on SQLite."""
    sqlite_path: Path | None

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one query, written with $1, $2 placeholders, on either database."""
        if self.pg_dsn is not None:
            return asyncio.run(_pg_fetch(self.pg_dsn, sql, params))
        assert self.sqlite_path is not None
        with sqlite3.connect(self.sqlite_path) as conn:
            return list(conn.execute(re.sub(r"\$\d+", "?", sql), params).fetchall())


class CpuMeter:
    """A server's CPU from a mark to now: with `mark` called when sending starts, the
    connection set-up is left out."""

    def __init__(self, server: Serving) -> None:
        self.server = server
        self.mark()

    def mark(self) -> None:
        self.since = time.monotonic()
        self.cpu_s = self.server.cpu_s()

    def read(self) -> tuple[float, float]:
        """(CPU seconds, cores: CPU seconds per second) since the mark."""
        used = self.server.cpu_s() - self.cpu_s
        return round(used, 2), round(used / (time.monotonic() - self.since), 3)


async def _pg_fetch(dsn: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


@contextmanager
def serving(
    *,
    postgres: bool,
    redis_url: str | None,
    admin_dsn: str,
    core: int | None,
    settings: dict[str, str] | None = None,
) -> Iterator[Serving]:
    """`livemart serve` pinned to `core` on a throwaway PostgreSQL database (else SQLite in a
    temporary directory) and, with `redis_url`, Redis under a prefix of its own; all of it
    is stopped and removed afterwards."""
    run = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="lmbench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(LIVEMART_SECRET=SECRET, **(settings or {}))
    database = f"lmbench_{run}"
    prefix = f"lmbench:{run}:"
    pg_dsn = None
    sqlite_path = None
    if postgres:
        asyncio.run(create_database(admin_dsn, database))
        pg_dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{database}"
        env["DATABASE_URL"] = pg_dsn.replace("postgresql://", "postgresql+asyncpg://")
    else:
        sqlite_path = workdir / "bench.db"
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{sqlite_path}"
    if redis_url is not None:
        env.update(REDIS_URL=redis_url, LIVEMART_REDIS_PREFIX=prefix)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "livemart", "serve", "--port", str(port), "--log-level", "warning"]
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(pinned(core, serve), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(url, server)
        except RuntimeError as exc:
            log.flush()
            tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; server log:\n{tail}") from None
        backend = ("redis+" if redis_url else "") + ("postgresql" if postgres else "sqlite")
        # taskset execs the server, so the pid is the server's own.
        yield Serving(url, psutil.Process(server.pid), backend, env, pg_dsn, sqlite_path)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if postgres:
            asyncio.run(drop_database(admin_dsn, database))
        if redis_url is not None:
            delete_prefix(redis_url, prefix)


def python_run(args: argparse.Namespace, server: Serving) -> dict[str, Any]:
    """`livemart loadtest flashsale` pinned to the generator core; its summary."""
    before = server.cpu_s()
    with tempfile.TemporaryDirectory(prefix="lmbench-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        loadtest = [
            sys.executable, "-m", "livemart", "loadtest", "flashsale", "--url", server.url,
            "--viewers", str(args.viewers), "--rate", str(args.rate), "--duration", str(args.duration),
            "--stock", str(args.stock), "--protocol", args.protocol, "--json", str(summary_file),
        ]  # fmt: skip
        subprocess.run(
            pinned(args.generator_core, loadtest),
            env=server.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=args.duration + 300,
        )
        summary: dict[str, Any] = json.loads(summary_file.read_text())
    summary["server_cpu_s"] = round(server.cpu_s() - before, 2)
    return summary


def create_sale(api: httpx.Client, stock: int) -> tuple[str, str]:
    """A room, a product and a sale of `stock` units in it, by a host of its own: (room, sale)."""
    host = {"Authorization": f"Bearer {mint(SECRET, 'fs-host', 'flash sale host', TOKEN_TTL_S)}"}

    def post(path: str, body: dict[str, Any]) -> str:
        response = api.post(path, json=body, headers=host)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path} -> {response.status_code} {response.text[:200]}")
        return str(response.json()["id"])

    room = post("/api/rooms", {"title": "flash sale benchmark"})
    product = post("/api/products", {"title": "benchmark item", "price_cents": 1990, "currency": "EUR"})
    sale = post(
        "/api/flash-sales",
        {
            "product_id": product,
            "stock": stock,
            "price_cents": 990,
            "per_user_limit": PER_USER_LIMIT,
            "hold_seconds": HOLD_SECONDS,
            "room_id": room,
        },
    )
    return room, sale


def native_run(args: argparse.Namespace, server: Serving) -> dict[str, Any]:
    """Buyers subscribe to the room, then `reserve` at the rate through wsdrive; then checks."""
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, timeout=10.0) as api, tempfile.TemporaryDirectory() as tmp:
        room, sale = create_sale(api, args.stock)
        tokens = Path(tmp) / "tokens"
        tokens.write_text(
            "".join(
                mint(SECRET, f"fs-{run}-{i}", f"buyer {i}", TOKEN_TTL_S) + "\n" for i in range(args.viewers)
            )
        )
        granted = Path(tmp) / "granted.jsonl"
        meter = CpuMeter(server)
        result = native.command(
            [
                "--url", server.url.replace("http://", "ws://") + "/ws", "--conns", str(args.viewers),
                "--tokens", str(tokens), "--key-prefix", run,
                "--setup", '{"id":%ID%,"op":"subscribe","ch":"room:' + room + '"}',
                "--template", '{"id":%ID%,"op":"reserve","sale":"' + sale + '","quantity":1,"key":"%KEY%"}',
                "--rate", str(args.rate), "--duration", str(args.duration), "--drain", str(args.drain),
                "--ok-file", str(granted),
            ],
            pinned=pinned(args.generator_core, []),
            timeout_s=args.duration + args.drain + 300,
            on_ready=meter.mark,
        )  # fmt: skip
        result["server_cpu_s"], result["server_cpu"] = meter.read()
        holds = [json.loads(line)["ok"] for line in granted.read_text().splitlines()]
        remaining = api.get(f"/api/flash-sales/{sale}").json()["remaining"]
    result["checks"] = check_sale(server, sale, args.stock, holds, remaining)
    sent = result["sent"]
    result["attempts_per_s"] = round(sent / result["duration_s"], 1) if result["duration_s"] else None
    result["server_cpu_us_per_attempt"] = round(result["server_cpu_s"] / sent * 1e6, 1) if sent else None
    return result


def check_sale(
    server: Serving, sale: str, stock: int, holds: list[dict[str, Any]], remaining: int
) -> dict[str, Any]:
    """What the replies and SQL say was sold, and whether that is exactly the stock."""
    rows = server.fetch(
        "SELECT id, user_id, quantity FROM commerce_reservations WHERE sale_id = $1 AND status = 'held'", sale
    )
    per_user: dict[str, int] = {}
    for _, user, quantity in rows:
        per_user[user] = per_user.get(user, 0) + quantity
    reply_ids = [hold["id"] for hold in holds]
    checks: dict[str, Any] = {
        "stock": stock,
        "held_replies": sum(hold["quantity"] for hold in holds),
        "held_sql": sum(per_user.values()),
        "duplicate_replies": len(reply_ids) - len(set(reply_ids)),
        "replies_not_in_sql": len(set(reply_ids) - {row[0] for row in rows}),
        "users_over_limit": sum(1 for units in per_user.values() if units > PER_USER_LIMIT),
        "remaining": remaining,
    }
    checks["ok"] = (
        checks["held_replies"] == checks["held_sql"] == stock
        and checks["duplicate_replies"] == checks["replies_not_in_sql"] == checks["users_over_limit"] == 0
        and remaining == 0
    )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=("python", "native"), default="python", help="the generator")
    parser.add_argument("--viewers", type=int, default=1000, help="buyers, one connection each")
    parser.add_argument("--rate", type=float, default=5000, help="reservation attempts per second")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--drain", type=float, default=5, help="native: seconds to wait for late replies")
    parser.add_argument("--stock", type=int, default=100)
    parser.add_argument("--protocol", choices=["json", "msgpack"], default="json", help="python driver only")
    parser.add_argument("--embedded", action="store_true", help="no Redis: in-process ledger and SQLite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--generator-core", type=int, default=1)
    args = parser.parse_args()
    if args.driver == "native":
        native.build()
    with serving(
        postgres=not args.embedded,
        redis_url=None if args.embedded else args.redis_url,
        admin_dsn=args.admin_dsn,
        core=args.server_core,
    ) as server:
        summary = native_run(args, server) if args.driver == "native" else python_run(args, server)
    summary["backend"] = "embedded" if args.embedded else server.backend
    summary["driver"] = args.driver
    summary["load_average"] = os.getloadavg()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
