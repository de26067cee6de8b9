"""Client CPU of the domain state's Redis calls: one Redis server against a three-master cluster.

Starts private servers (redis-server binaries, nothing on disk), then for each drives
the room state and the stock ledger the way a busy process does: every round, in one
loop turn, ``--calls`` comment admissions and as many snapshot writes over 10 rooms, and
``--calls`` reservations over 10 sales with a stock check. The calls of a round share
the batched pipelines (one per master on the cluster). Prints one JSON line per setup:
CPU microseconds of this process per call, and milliseconds per round.

    python benchmarks/redis_domain.py --rounds 300 --calls 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from commerce.ledger import Attempt, Snapshot, Terms
from commerce.redis_ledger import RedisLedger
from realtime.redis_client import connect
from realtime.resp import RespClients
from realtime.storage import Database, migrate
from rooms.live import LiveRooms
from rooms.live.redis_state import RedisRoomState
from rooms.live.repository import RoomRepository
from tests.services import RedisClusterNodes, RedisServer

UNLIMITED = {"rate_per_s": 1e9, "burst": 10**9}


async def measure(name: str, url: str, rounds: int, calls: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as workdir:
        database = f"sqlite+aiosqlite:///{workdir}/rooms.db"
        assert LiveRooms.migrations is not None
        await migrate(database, [LiveRooms.migrations])
        db = Database(database)
        client, connections = connect(url), RespClients()
        try:
            repository = RoomRepository(db)
            rooms = [(await repository.create(f"r{i}", "h")).id for i in range(10)]
            state = RedisRoomState(
                repository.control, client, lambda tag, key: f"bench:{{{tag}}}:{key}", connections=connections
            )
            for room in rooms:  # control hashes loaded from SQL before timing
                await state.admit_comment(room, "warm", is_host=False, **UNLIMITED)

            started, cpu = time.perf_counter(), time.process_time()
            for n in range(rounds):
                await asyncio.gather(
                    *(
                        state.admit_comment(rooms[i % 10], f"u{i}", is_host=False, **UNLIMITED)
                        for i in range(calls)
                    ),
                    *(
                        state.push_comment(rooms[i % 10], {"off": n * calls + i, "t": "hi"}, 50)
                        for i in range(calls)
                    ),
                )
            room_wall, room_cpu = time.perf_counter() - started, time.process_time() - cpu

            ledger = RedisLedger(client, connections, prefix="bench:", key_ttl_ms=3_600_000)
            now = int(time.time() * 1000)
            sales = [f"s{i}" for i in range(10)]
            for sale in sales:
                terms = Terms(stock=10**9, per_user_limit=10**9, hold_ms=600_000)
                await ledger.load(Snapshot(sale, 1, terms), now)
            started, cpu = time.perf_counter(), time.process_time()
            for n in range(rounds):
                await asyncio.gather(
                    *(
                        ledger.reserve(Attempt(sales[i % 10], f"r{n}-{i}", f"u{i}", 1, f"k{n}-{i}", now))
                        for i in range(calls)
                    ),
                    ledger.levels(sales),
                )
            sale_wall, sale_cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            await connections.aclose()
            await client.aclose()
            await db.close()
    return {
        "setup": name,
        "rounds": rounds,
        "room_cpu_us_per_call": round(room_cpu / (2 * rounds * calls) * 1e6, 1),
        "room_ms_per_round": round(room_wall / rounds * 1e3, 2),
        "reserve_cpu_us_per_call": round(sale_cpu / (rounds * calls) * 1e6, 1),
        "reserve_ms_per_round": round(sale_wall / rounds * 1e3, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--calls", type=int, default=40, help="room calls and reservations per round")
    args = parser.parse_args()
    server = RedisServer()
    try:
        print(json.dumps(asyncio.run(measure("single", server.url, args.rounds, args.calls))), flush=True)
    finally:
        server.stop()
    nodes = RedisClusterNodes()
    try:
        print(json.dumps(asyncio.run(measure("cluster-3", nodes.url, args.rounds, args.calls))), flush=True)
    finally:
        nodes.stop()


if __name__ == "__main__":
    main()
