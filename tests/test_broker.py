"""One contract suite for every broker: in-process and Redis keep the same guarantees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from realtime.broker import Broker, HistoryPolicy, MemoryBroker, Publication
from realtime.errors import ProtocolError
from realtime.redis_broker import RedisBroker
from tests.services import BrokerKind, RedisServer

HISTORY = HistoryPolicy(size=50, ttl_s=60)


class Received:
    """Collects what a broker hands to its hub."""

    def __init__(self, broker: Broker) -> None:
        self.items: list[Publication] = []
        self.resubscribed: list[set[str]] = []
        self.arrived = asyncio.Event()
        self.resubscribe_seen = asyncio.Event()
        broker.set_handlers(self._on_publication, self._on_resubscribed)

    def _on_resubscribed(self, channels: set[str]) -> None:
        self.resubscribed.append(channels)
        self.resubscribe_seen.set()

    def _on_publication(self, pub: Publication) -> None:
        self.items.append(pub)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Publication]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items


def make_broker(kind: BrokerKind) -> Broker:
    if kind.redis_url is None:
        return MemoryBroker()
    return RedisBroker(kind.redis_url, prefix=kind.prefix, history_ttl_s=60)


@pytest.fixture
async def broker(broker_kind: BrokerKind) -> AsyncIterator[Broker]:
    broker = make_broker(broker_kind)
    await broker.start()
    yield broker
    await broker.close()


async def test_subscribed_channel_receives_in_order(broker: Broker) -> None:
    received = Received(broker)
    await broker.subscribe("t:a")
    for i in range(200):
        await broker.publish(Publication("t:a", "n", {"i": i}))
    items = await received.wait_for(200)
    assert [p.data["i"] for p in items] == list(range(200))


async def test_concurrent_publishes_keep_order_and_offsets(broker: Broker) -> None:
    received = Received(broker)
    await broker.subscribe("t:b")
    positions = await asyncio.gather(
        *(broker.publish(Publication("t:b", "n", {"i": i}), history=HISTORY) for i in range(300))
    )
    items = await received.wait_for(300)
    assert [p.offset for p in items] == list(range(1, 301))
    assert sorted(p.offset for p in positions) == list(range(1, 301))
    assert len({p.epoch for p in positions}) == 1


async def test_publish_all_keeps_order_and_the_given_offsets(broker: Broker) -> None:
    """A domain's own sequence (group seqs) goes out in one batch, in order, as numbered."""
    received = Received(broker)
    await broker.subscribe("t:seq")
    await broker.subscribe("t:other")
    pubs = [Publication("t:seq" if i % 3 else "t:other", "m", {"i": i}, offset=i + 1) for i in range(300)]
    await broker.publish_all(pubs)
    items = await received.wait_for(300)
    assert [(p.channel, p.offset, p.data["i"]) for p in items] == [
        (p.channel, p.offset, p.data["i"]) for p in pubs
    ]
    assert (await broker.history("t:seq", 0, limit=10)).publications == []


async def test_unsubscribed_channel_is_not_delivered(broker: Broker) -> None:
    received = Received(broker)
    await broker.subscribe("t:yes")
    await broker.publish(Publication("t:no", "n", {}))
    await broker.publish(Publication("t:yes", "n", {}))
    items = await received.wait_for(1)
    await asyncio.sleep(0.1)
    assert [p.channel for p in items] == ["t:yes"]


async def test_publication_fields_survive_the_trip(broker: Broker) -> None:
    received = Received(broker)
    await broker.subscribe("t:f")
    sent = Publication("t:f", "comment", {"text": "héllo", "n": [1]}, lane="sampled", author="u9")
    await broker.publish(sent, history=HISTORY)
    (got,) = await received.wait_for(1)
    assert (got.event, got.data, got.lane, got.author, got.offset) == (
        "comment", {"text": "héllo", "n": [1]}, "sampled", "u9", 1,
    )  # fmt: skip


async def test_position_before_first_publish_keeps_its_epoch(broker: Broker) -> None:
    before = await broker.position("t:p")
    assert before.offset == 0
    after = await broker.publish(Publication("t:p", "n", {}), history=HISTORY)
    assert (after.offset, after.epoch) == (1, before.epoch)


async def test_history_returns_all_missed_or_says_incomplete(broker: Broker) -> None:
    # Redis trims approximately (whole stream nodes), so keep well past the size.
    await asyncio.gather(
        *(broker.publish(Publication("t:h", "n", {"i": i}), history=HISTORY) for i in range(400))
    )
    page = await broker.history("t:h", 370, limit=100)
    assert page.complete
    assert [p.data["i"] for p in page.publications] == list(range(370, 400))
    assert page.position.offset == 400
    # The oldest offsets were trimmed: recovery from 0 must not be partial.
    trimmed = await broker.history("t:h", 0, limit=1000)
    assert not trimmed.complete
    up_to_date = await broker.history("t:h", 400, limit=100)
    assert up_to_date.complete and up_to_date.publications == []
    ahead = await broker.history("t:h", 450, limit=100)
    assert not ahead.complete
    over_limit = await broker.history("t:h", 390, limit=5)
    assert not over_limit.complete


async def test_ephemeral_publish_does_not_take_an_offset(broker: Broker) -> None:
    await broker.publish(Publication("t:e", "n", {}), history=HISTORY)
    await broker.publish(Publication("t:e", "likes", {"total": 3}))
    assert (await broker.position("t:e")).offset == 1


async def test_explicit_offset_travels_with_the_publication(broker: Broker) -> None:
    received = Received(broker)
    await broker.subscribe("t:g")
    await broker.publish(Publication("t:g", "message", {"seq": 41}, offset=41))
    (got,) = await received.wait_for(1)
    assert got.offset == 41


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_two_redis_brokers_see_each_other(broker_kind: BrokerKind) -> None:
    a, b = make_broker(broker_kind), make_broker(broker_kind)
    await a.start()
    await b.start()
    try:
        received = Received(b)
        await b.subscribe("t:x")
        positions = [await a.publish(Publication("t:x", "n", {"i": i}), history=HISTORY) for i in range(20)]
        items = await received.wait_for(20)
        assert [p.offset for p in items] == [p.offset for p in positions] == list(range(1, 21))
    finally:
        await a.close()
        await b.close()


async def test_a_quick_redis_restart_is_reported_not_papered_over() -> None:
    """Redis back within a second, empty: redis-py alone would reconnect and re-subscribe
    quietly, and nobody would recover the gap. The broker must tell its hub instead."""
    server = RedisServer()
    broker = RedisBroker(server.url, prefix="lm:", history_ttl_s=60)
    received = Received(broker)
    try:
        await broker.start()
        await broker.subscribe("t:quick")
        await broker.publish(Publication("t:quick", "n", {"i": 1}), history=HISTORY)
        await received.wait_for(1)
        port = server.port
        server.stop()
        server = RedisServer(port=port)
        async with asyncio.timeout(10):
            await received.resubscribe_seen.wait()
        assert any("t:quick" in channels for channels in received.resubscribed)
        for _ in range(50):  # a pooled connection from before the restart may fail once
            try:
                await broker.publish(Publication("t:quick", "n", {"i": 2}), history=HISTORY)
                break
            except ProtocolError:
                await asyncio.sleep(0.1)
        items = await received.wait_for(2)
        assert [(p.data["i"], p.offset) for p in items] == [(1, 1), (2, 1)]  # a new epoch
    finally:
        await broker.close()
        server.stop()
