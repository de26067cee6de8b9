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
from realtime.resp import RespClients
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


@pytest.fixture
async def connections() -> AsyncIterator[RespClients]:
    connections = RespClients()
    try:
        yield connections
    finally:
        await connections.aclose()


async def test_scripts_redis_does_not_know_are_loaded_not_reported(
    client: RedisClient, connections: RespClients
) -> None:
    """After a restart no script is loaded; NOSCRIPT must never reach the caller."""
    batcher = Batcher(client, connections)
    marker = uuid.uuid4().hex  # a script no server has seen
    script = batcher.script(f"return {{KEYS[1], '{marker}'}}")
    keys = [f"{unique_prefix()}{{room:{i}}}:x" for i in range(6)]
    replies = await asyncio.gather(*(batcher.call(*script.command([key])) for key in keys))
    assert replies == [[key.encode(), marker.encode()] for key in keys]


async def test_one_turn_across_slots_answers_each_caller_in_order(
    client: RedisClient, connections: RespClients
) -> None:
    batcher = Batcher(client, connections)
    prefix = unique_prefix()
    keys = [f"{prefix}{{sale:{i}}}:n" for i in range(30)]
    totals = await batcher.call_many([("INCRBY", key, i + 1) for i, key in enumerate(keys)])
    assert totals == list(range(1, 31))
    assert len({key_slot(key.encode()) for key in keys}) == 30


@pytest.mark.slow
async def test_a_restarted_node_costs_its_own_commands_only(
    redis_cluster: RedisClusterNodes, connections: RespClients
) -> None:
    """Keys on the other masters answer throughout; the restarted one comes back empty,
    with its scripts reloaded, after at most one failed batch."""
    redis = connect(redis_cluster.url)
    try:
        batcher = Batcher(redis, connections)
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


async def test_the_cluster_client_dropping_its_connections_cuts_off_no_command(
    redis_cluster: RedisClusterNodes, connections: RespClients
) -> None:
    """redis-py's cluster client drops every node's connections by itself: when a node
    answers CLUSTERDOWN (as a restarted master does for its first seconds) or a slot map
    cannot be read. Commands in flight on the healthy nodes must still be answered,
    or a publish that went through is reported ``unavailable`` and sent again."""
    redis = connect(redis_cluster.url)
    try:
        batcher = Batcher(redis, connections)
        key = f"{unique_prefix()}{{room:1}}:list"
        waiting = batcher.submit("BLPOP", key, 0.5)  # held by its node for half a second
        await asyncio.sleep(0.1)
        await redis.aclose()  # what redis-py does then
        assert await waiting is None
        assert await batcher.call("RPUSH", key, "after") == 1
    finally:
        await redis.aclose()
