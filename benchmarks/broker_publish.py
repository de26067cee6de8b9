"""Publish rate of the Redis broker: one Redis server against a three-master Redis Cluster.

Starts private servers (redis-server binaries, nothing on disk), then for each: one
publishing broker sends N history-backed publications spread over C channels (as the
gateway does: concurrent publishes, pipelined per loop turn), while a second broker,
subscribed to every channel, counts arrivals. Prints one JSON line per setup.

    python benchmarks/broker_publish.py --publications 50000 --channels 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.broker import HistoryPolicy, Publication
from realtime.redis_broker import RedisBroker
from tests.services import RedisClusterNodes, RedisServer

HISTORY = HistoryPolicy(size=300, ttl_s=600)


async def measure(name: str, url: str, publications: int, channels: int, window: int) -> dict[str, object]:
    publisher = RedisBroker(url, prefix="bench:")
    listener = RedisBroker(url, prefix="bench:")
    arrived = 0
    done = asyncio.Event()

    def on_publication(pub: Publication) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == publications:
            done.set()

    listener.set_handlers(on_publication, lambda channels: None)
    await publisher.start()
    await listener.start()
    names = [f"room:{i}" for i in range(channels)]
    for channel in names:
        await listener.subscribe(channel)
    started = time.perf_counter()
    for start in range(0, publications, window):
        await asyncio.gather(
            *(
                publisher.publish(Publication(names[i % channels], "n", {"i": i}), history=HISTORY)
                for i in range(start, min(start + window, publications))
            )
        )
    published_s = time.perf_counter() - started
    await asyncio.wait_for(done.wait(), 60)
    delivered_s = time.perf_counter() - started
    await publisher.close()
    await listener.close()
    return {
        "setup": name,
        "publications": publications,
        "channels": channels,
        "publish_per_s": round(publications / published_s),
        "delivered_per_s": round(publications / delivered_s),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publications", type=int, default=50_000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--window", type=int, default=500, help="publishes in flight at once")
    args = parser.parse_args()
    single = RedisServer()
    cluster = RedisClusterNodes()
    try:
        for name, url in (("single", single.url), ("cluster-3", cluster.url)):
            result = await measure(name, url, args.publications, args.channels, args.window)
            print(json.dumps(result), flush=True)
    finally:
        single.stop()
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
