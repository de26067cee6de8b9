"""The Redis broker on a real three-master Redis Cluster: sharded pub/sub and failover."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis
from redis.crc import key_slot

from realtime.broker import HistoryPolicy, Publication
from realtime.redis_broker import RedisBroker
from tests.services import RedisClusterNodes, unique_prefix
from tests.test_broker import Received

HISTORY = HistoryPolicy(size=100, ttl_s=60)


@pytest.fixture
async def brokers(redis_cluster: RedisClusterNodes) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    prefix = unique_prefix()
    a = RedisBroker(redis_cluster.url, prefix=prefix, history_ttl_s=60)
    b = RedisBroker(redis_cluster.url, prefix=prefix, history_ttl_s=60)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


def shard_of(nodes: RedisClusterNodes, key: str) -> int:
    """The port of the master that owns ``key``'s slot."""
    slot = key_slot(key.encode())
    client = redis.Redis(port=nodes.ports[0])
    try:
        for start, end, (_host, port, *_), *_ in client.cluster("slots"):
            if start <= slot <= end:
                return int(port)
    finally:
        client.close()
    raise AssertionError(f"no shard owns slot {slot}")


async def test_channels_on_every_shard_deliver_in_order_with_offsets(
    brokers: tuple[RedisBroker, RedisBroker], redis_cluster: RedisClusterNodes
) -> None:
    a, b = brokers
    channels = [f"room:{i}" for i in range(12)]
    assert len({shard_of(redis_cluster, "{" + c + "}") for c in channels}) == 3
    received = Received(b)
    for channel in channels:
        await b.subscribe(channel)
    await asyncio.gather(
        *(a.publish(Publication(c, "n", {"i": i}), history=HISTORY) for i in range(20) for c in channels)
    )
    items = await received.wait_for(20 * len(channels), timeout=10)
    for channel in channels:
        mine = [p for p in items if p.channel == channel]
        assert [p.data["i"] for p in mine] == list(range(20))
        assert [p.offset for p in mine] == list(range(1, 21))
    page = await a.history(channels[0], 10, limit=100)
    assert page.complete and [p.offset for p in page.publications] == list(range(11, 21))


async def test_publication_travels_to_the_owning_shard_only(
    brokers: tuple[RedisBroker, RedisBroker], redis_cluster: RedisClusterNodes
) -> None:
    a, b = brokers
    await b.subscribe("room:solo")
    tag = f"{a._prefix}{{room:solo}}"
    owner = shard_of(redis_cluster, tag)
    counts = {}
    for port in redis_cluster.ports:
        client = redis.Redis(port=port)
        try:
            _, subscribers = client.execute_command("PUBSUB", "SHARDNUMSUB", tag)
            counts[port] = int(subscribers)
        finally:
            client.close()
    assert counts[owner] == 1
    assert all(n == 0 for port, n in counts.items() if port != owner)


def test_room_channel_tags_spread_evenly_over_shards(redis_cluster: RedisClusterNodes) -> None:
    """Hash tags are the channel names themselves; 30,000 rooms land within 3% of even."""
    client = redis.Redis(port=redis_cluster.ports[0])
    try:
        ranges = [(start, end, int(port)) for start, end, (_, port, *_), *_ in client.cluster("slots")]
    finally:
        client.close()
    owners = Counter()
    for i in range(30_000):
        slot = key_slot(f"room:{i}".encode())
        owners[next(port for start, end, port in ranges if start <= slot <= end)] += 1
    for count in owners.values():
        assert abs(count / 30_000 - 1 / 3) < 0.03, owners


@pytest.mark.slow
async def test_shard_restart_resubscribes_and_reports_the_gap(redis_cluster: RedisClusterNodes) -> None:
    prefix = unique_prefix()
    a = RedisBroker(redis_cluster.url, prefix=prefix, history_ttl_s=60)
    b = RedisBroker(redis_cluster.url, prefix=prefix, history_ttl_s=60)
    await a.start()
    await b.start()
    try:
        received = Received(b)
        channels = [f"room:{i}" for i in range(12)]
        for channel in channels:
            await b.subscribe(channel)
        victim = shard_of(redis_cluster, f"{prefix}{{{channels[0]}}}")
        on_victim = {c for c in channels if shard_of(redis_cluster, f"{prefix}{{{c}}}") == victim}
        redis_cluster.restart(victim)

        async def all_delivered() -> bool:
            before = len(received.items)
            for channel in channels:
                try:
                    await a.publish(Publication(channel, "n", {"after": True}), history=HISTORY)
                except Exception:
                    return False
            await asyncio.sleep(0.3)
            delivered = {p.channel for p in received.items[before:]}
            return delivered == set(channels)

        async with asyncio.timeout(30):
            while not await all_delivered():  # noqa: ASYNC110 - polls a restarting server
                await asyncio.sleep(0.5)
        reported = set().union(*received.resubscribed)
        assert on_victim <= reported
    finally:
        await a.close()
        await b.close()
