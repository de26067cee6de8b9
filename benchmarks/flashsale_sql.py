"""The design livemart does not use, measured for comparison: stock as a row in PostgreSQL.

Every attempt is one transaction on one hot row:

    UPDATE sale SET remaining = remaining - 1 WHERE id = 1 AND remaining > 0 RETURNING remaining
    INSERT INTO hold (user_id) VALUES ($1) ON CONFLICT DO NOTHING   -- per-user limit 1
    COMMIT   (or ROLLBACK when sold out / over the limit)

It is correct (the row lock serializes the decrement) but every attempt, the refused
ones included, waits its turn on that lock and pays a commit. ``--clients`` connections
run attempts back to back for ``--seconds``, first with stock to spare (the hold path),
then with none left (the sold-out path). A throwaway database is created and dropped.

    python benchmarks/flashsale_sql.py --clients 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg

SCHEMA = """
CREATE TABLE sale (id int PRIMARY KEY, remaining int NOT NULL);
CREATE TABLE hold (
  id bigserial PRIMARY KEY, user_id text NOT NULL UNIQUE, created_at timestamptz DEFAULT now()
);
"""
DECREMENT = "UPDATE sale SET remaining = remaining - 1 WHERE id = 1 AND remaining > 0 RETURNING remaining"
RECORD = "INSERT INTO hold (user_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"


async def attempt(conn: asyncpg.Connection, user: str) -> str:
    async with conn.transaction():
        if await conn.fetchval(DECREMENT) is None:
            return "sold_out"
        if await conn.fetchval(RECORD, user) is None:
            raise _Refused("limit_exceeded")  # rolls the decrement back
        return "held"


class _Refused(Exception):
    pass


async def drive(dsn: str, clients: int, seconds: float) -> dict[str, object]:
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    counter = iter(range(10**12))

    async def client() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    outcome = await attempt(conn, f"u{next(counter)}")
                except _Refused as refused:
                    outcome = str(refused)
                latencies.append(time.perf_counter() - started)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "attempts_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
        "outcomes": outcomes,
    }


async def main(args: argparse.Namespace) -> None:
    name = f"lmbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    results: dict[str, object] = {
        "benchmark": "flashsale_sql",
        "clients": args.clients,
        "seconds": args.seconds,
    }
    try:
        setup = await asyncpg.connect(dsn)
        await setup.execute(SCHEMA)
        await setup.execute("INSERT INTO sale VALUES (1, 1000000000)")
        results["hold"] = await drive(dsn, args.clients, args.seconds)
        await setup.execute("UPDATE sale SET remaining = 0")
        results["sold_out"] = await drive(dsn, args.clients, args.seconds)
        await setup.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(json.dumps(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
