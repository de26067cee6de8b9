"""Batched Redis commands on one server and on a three-master Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from realtime.errors import ProtocolError
from realtime.redis_batch import Batcher
from realtime.redis_client import RedisClient, connect
from tests.services import RedisClusterNodes, unique_prefix
from tests.test_redis_cluster import shard_of


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)]
)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    if request.param == "cluster":
        url: str = request.getfixturevalue("redis_cluster").url
    else:
        url = request.getfixturevalue("redis_url")
    redis = connect(url)
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_scripts_redis_does_not_know_are_loaded_not_reported(client: RedisClient) -> None:
    """After a restart no script is loaded; NOSCRIPT must never reach the caller."""
    batcher = Batcher(client)
    marker = uuid.uuid4().hex  # a script no server has seen
    script = batcher.script(f"return {{KEYS[1], '{marker}'}}")
    keys = [f"{unique_prefix()}{{room:{i}}}:x" for i in range(6)]
    replies = await asyncio.gather(*(batcher.call(*script.command([key])) for key in keys))
    assert replies == [[key.encode(), marker.encode()] for key in keys]


async def test_one_turn_across_slots_answers_each_caller_in_order(client: RedisClient) -> None:
    batcher = Batcher(client)
    prefix = unique_prefix()
    keys = [f"{prefix}{{sale:{i}}}:n" for i in range(30)]
    totals = await batcher.call_many([("INCRBY", key, i + 1) for i, key in enumerate(keys)])
    assert totals == list(range(1, 31))
    assert len({key_slot(key.encode()) for key in keys}) == 30


@pytest.mark.slow
async def test_a_restarted_node_costs_its_own_commands_only(redis_cluster: RedisClusterNodes) -> None:
    """Keys on the other masters answer throughout; the restarted one comes back empty,
    with its scripts reloaded, after at most one failed batch."""
    redis = connect(redis_cluster.url)
    try:
        batcher = Batcher(redis)
        count = batcher.script("return redis.call('INCR', KEYS[1])")
        prefix = unique_prefix()
        keys = [f"{prefix}{{room:{i}}}:n" for i in range(12)]
        owners = [shard_of(redis_cluster, key) for key in keys]
        victim = owners[0]
        assert len(set(owners)) == 3

        async def turn() -> list[int | None]:
            async def one(key: str) -> int | None:
                try:
                    return int(await batcher.call(*count.command([key])))
                except ProtocolError as exc:
                    assert exc.code == "unavailable"
                    return None

            return list(await asyncio.gather(*(one(key) for key in keys)))

        assert await turn() == [1] * 12
        await asyncio.to_thread(redis_cluster.restart, victim)
        first = await turn()
        others = sum(port != victim for port in owners)
        assert [n for n, port in zip(first, owners, strict=True) if port != victim] == [2] * others
        assert {n for n, port in zip(first, owners, strict=True) if port == victim} <= {1, None}
        second = await turn()
        for n, before, port in zip(second, first, owners, strict=True):
            assert n == (3 if port != victim else (before or 0) + 1), (second, first)
    finally:
        await redis.aclose()
