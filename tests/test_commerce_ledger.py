"""One contract suite for every stock ledger: the in-process one and Redis (Lua)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from commerce.ledger import (
    VERSION_STRIDE,
    Attempt,
    Hold,
    KeyRecord,
    MemoryLedger,
    Outcome,
    Snapshot,
    StockLedger,
    Terms,
    key_field,
)
from commerce.redis_ledger import RedisLedger
from realtime.redis_client import connect
from realtime.resp import RespClients
from tests.conftest import redis_under_test

KEY_TTL_MS = 25 * 3600 * 1000
NOW = 1_700_000_000_000
_ids = itertools.count(1)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[StockLedger]:
    """Every ledger in turn: in-process, one Redis, and a three-master Redis Cluster."""
    if request.param == "memory":
        yield MemoryLedger(key_ttl_ms=KEY_TTL_MS)
        return
    url, prefix = redis_under_test(request, request.param)
    client, connections = connect(url), RespClients()
    try:
        yield RedisLedger(client, connections, prefix=prefix, key_ttl_ms=KEY_TTL_MS)
    finally:
        await connections.aclose()
        await client.aclose()


def attempt(sale: str, user: str, *, qty: int = 1, key: str | None = None, now: int = NOW) -> Attempt:
    n = next(_ids)
    return Attempt(sale, f"r{n}", user, qty, key or f"k{n}", now)


async def open_sale(
    ledger: StockLedger, sale: str = "s1", *, stock: int = 10, limit: int = 2, hold_ms: int = 5000, **kw: int
) -> str:
    terms = Terms(stock=stock, per_user_limit=limit, hold_ms=hold_ms, **kw)
    assert await ledger.load(Snapshot(sale, 1, terms), NOW)
    return sale


async def remaining(ledger: StockLedger, sale: str) -> int:
    level = (await ledger.levels([sale]))[sale]
    assert level is not None
    return level.remaining


async def test_unknown_sale_is_missing(ledger: StockLedger) -> None:
    result = await ledger.reserve(attempt("nope", "u1"))
    assert result.outcome is Outcome.MISSING
    assert (await ledger.levels(["nope"]))["nope"] is None


async def test_hold_takes_units_and_bumps_version(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=5, hold_ms=3000)
    result = await ledger.reserve(attempt(sale, "u1", qty=2, key="K"))
    assert result.outcome is Outcome.HELD
    assert result.remaining == 3
    assert result.generation == 1
    assert result.version == VERSION_STRIDE + 1
    assert result.deadline_ms == NOW + 3000
    level = (await ledger.levels([sale]))[sale]
    assert level is not None
    assert (level.remaining, level.version, level.holds) == (3, VERSION_STRIDE + 1, 1)
    assert await ledger.held_keys(sale) == {key_field("u1", "K")}


async def test_same_key_same_user_replays(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=5)
    first = await ledger.reserve(attempt(sale, "u1", key="K"))
    again = await ledger.reserve(attempt(sale, "u1", key="K"))
    assert again.outcome is Outcome.REPLAY
    assert again.reservation_id == first.reservation_id
    assert await remaining(ledger, sale) == 4


async def test_key_is_scoped_per_user(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=5)
    mine = await ledger.reserve(attempt(sale, "u1", key="K"))
    theirs = await ledger.reserve(attempt(sale, "u2", key="K"))
    assert theirs.outcome is Outcome.HELD
    assert theirs.reservation_id != mine.reservation_id
    assert await remaining(ledger, sale) == 3


async def test_per_user_limit(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=10, limit=2)
    assert (await ledger.reserve(attempt(sale, "u1", qty=2))).outcome is Outcome.HELD
    refused = await ledger.reserve(attempt(sale, "u1"))
    assert refused.outcome is Outcome.LIMIT_EXCEEDED
    assert (await ledger.reserve(attempt(sale, "u2", qty=3))).outcome is Outcome.LIMIT_EXCEEDED
    assert await remaining(ledger, sale) == 8


async def test_sold_out_and_partial(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=3, limit=3)
    assert (await ledger.reserve(attempt(sale, "u1", qty=2))).outcome is Outcome.HELD
    too_many = await ledger.reserve(attempt(sale, "u2", qty=2))
    assert (too_many.outcome, too_many.remaining) == (Outcome.SOLD_OUT, 1)
    assert (await ledger.reserve(attempt(sale, "u2"))).outcome is Outcome.HELD
    assert (await ledger.reserve(attempt(sale, "u3"))).outcome is Outcome.SOLD_OUT
    assert await remaining(ledger, sale) == 0


async def test_window(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=3, starts_ms=NOW + 1000, ends_ms=NOW + 2000)
    assert (await ledger.reserve(attempt(sale, "u1", now=NOW))).outcome is Outcome.NOT_STARTED
    assert (await ledger.reserve(attempt(sale, "u1", now=NOW + 1000))).outcome is Outcome.HELD
    assert (await ledger.reserve(attempt(sale, "u2", now=NOW + 2000))).outcome is Outcome.ENDED
    assert await remaining(ledger, sale) == 2


async def test_give_back_is_idempotent_and_frees_the_limit(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=2, limit=1)
    held = await ledger.reserve(attempt(sale, "u1", key="K"))
    level = await ledger.give_back(sale, held.reservation_id)
    assert level is not None
    assert (level.remaining, level.holds) == (2, 0)
    assert level.version == held.version + 1
    assert await ledger.give_back(sale, held.reservation_id) is None
    assert await remaining(ledger, sale) == 2
    # The key still names the released reservation: a replay, not a second unit.
    assert await ledger.held_keys(sale) == {key_field("u1", "K")}
    assert (await ledger.reserve(attempt(sale, "u1", key="K"))).outcome is Outcome.REPLAY
    assert (await ledger.reserve(attempt(sale, "u1", key="K2"))).outcome is Outcome.HELD


async def test_give_back_with_key_forgets_the_key(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=2, limit=1)
    held = await ledger.reserve(attempt(sale, "u1", key="K"))
    assert await ledger.give_back(sale, held.reservation_id, key=("u1", "K")) is not None
    fresh = await ledger.reserve(attempt(sale, "u1", key="K"))
    assert fresh.outcome is Outcome.HELD
    assert fresh.reservation_id != held.reservation_id


async def test_settle_keeps_units_sold_and_stops_expiry(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=2, limit=1, hold_ms=1000)
    held = await ledger.reserve(attempt(sale, "u1"))
    assert await ledger.settle(sale, held.reservation_id)
    assert not await ledger.settle(sale, held.reservation_id)
    assert await ledger.due([sale], NOW + 5000, limit=10) == {}
    assert await ledger.give_back(sale, held.reservation_id) is None
    assert await remaining(ledger, sale) == 1
    assert (await ledger.reserve(attempt(sale, "u1"))).outcome is Outcome.LIMIT_EXCEEDED


async def test_due_lists_only_expired_holds(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=10, limit=5, hold_ms=1000)
    early = await ledger.reserve(attempt(sale, "u1", qty=2, now=NOW))
    await ledger.reserve(attempt(sale, "u2", now=NOW + 500))
    assert await ledger.due([sale], NOW + 999, limit=10) == {}
    due = await ledger.due([sale, "unknown"], NOW + 1000, limit=10)
    assert [(d.reservation_id, d.user_id, d.quantity) for d in due[sale]] == [(early.reservation_id, "u1", 2)]
    assert len((await ledger.due([sale], NOW + 2000, limit=1))[sale]) == 1
    assert len((await ledger.due([sale], NOW + 2000, limit=10))[sale]) == 2


async def test_load_only_moves_forward(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=10)
    await ledger.reserve(attempt(sale, "u1"))
    same = Snapshot(sale, 1, Terms(stock=10, per_user_limit=2, hold_ms=5000))
    assert not await ledger.load(same, NOW)
    assert await remaining(ledger, sale) == 9


async def test_load_rebuilds_holds_sales_and_keys(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=10)
    await ledger.reserve(attempt(sale, "ghost", qty=2))  # in the ledger, not in SQL
    holds = [Hold("h1", "u1", 2, NOW + 1000), Hold("h2", "u2", 1, None), Hold("h3", "u3", 1, NOW + 1000)]
    keys = [
        KeyRecord("u1", "K1", "h1", NOW),
        KeyRecord("u2", "K2", "h2", NOW),
        KeyRecord("u3", "old", "h3", NOW - KEY_TTL_MS),
        KeyRecord("u4", "K4", "released-earlier", NOW),
    ]
    snapshot = Snapshot(sale, 3, Terms(stock=10, per_user_limit=2, hold_ms=5000), holds, keys)
    assert await ledger.load(snapshot, NOW)
    level = (await ledger.levels([sale]))[sale]
    assert level is not None
    assert (level.remaining, level.generation, level.version, level.holds) == (6, 3, 3 * VERSION_STRIDE, 2)
    assert await ledger.held_keys(sale) == {
        key_field(u, k) for u, k in (("u1", "K1"), ("u2", "K2"), ("u4", "K4"))
    }
    replay = await ledger.reserve(attempt(sale, "u1", key="K1"))
    assert (replay.outcome, replay.reservation_id, replay.generation) == (Outcome.REPLAY, "h1", 3)
    assert (await ledger.reserve(attempt(sale, "u2", key="K2"))).reservation_id == "h2"
    assert (await ledger.reserve(attempt(sale, "u4", key="K4"))).reservation_id == "released-earlier"
    # The expired key is not restored; u3 still counts one unit against the limit.
    assert (await ledger.reserve(attempt(sale, "u3", key="old"))).outcome is Outcome.HELD
    assert (await ledger.reserve(attempt(sale, "u3", key="x"))).outcome is Outcome.LIMIT_EXCEEDED
    due = await ledger.due([sale], NOW + 1000, limit=10)
    assert {d.reservation_id for d in due[sale]} == {"h1", "h3"}
    assert await ledger.give_back(sale, "h2") is None  # confirmed: stays sold


async def test_concurrent_attempts_never_oversell(ledger: StockLedger) -> None:
    sale = await open_sale(ledger, stock=50, limit=1)
    attempts = [attempt(sale, f"u{i % 120}") for i in range(400)]
    results = await asyncio.gather(*(ledger.reserve(a) for a in attempts))
    held = [a.user_id for a, r in zip(attempts, results, strict=True) if r.outcome is Outcome.HELD]
    assert len(held) == 50
    assert len(set(held)) == 50
    assert {r.outcome for r in results} <= {Outcome.HELD, Outcome.SOLD_OUT, Outcome.LIMIT_EXCEEDED}
    assert await remaining(ledger, sale) == 0
    assert len(await ledger.held_keys(sale)) == 50


@pytest.mark.redis
async def test_redis_matches_memory_on_random_operations(redis_url: str, redis_prefix: str) -> None:
    """Differential check: the same random operations give the same answers on both."""
    client, connections = aioredis.Redis.from_url(redis_url), RespClients()
    memory = MemoryLedger(key_ttl_ms=KEY_TTL_MS)
    red = RedisLedger(client, connections, prefix=redis_prefix, key_ttl_ms=KEY_TTL_MS)
    rng = random.Random(4)
    try:
        terms = Terms(stock=15, per_user_limit=3, hold_ms=2000, starts_ms=NOW, ends_ms=NOW + 60_000)
        for led in (memory, red):
            assert await led.load(Snapshot("d", 1, terms), NOW)
        now = NOW
        ids: list[str] = []
        for step in range(400):
            now += rng.choice((0, 10, 300))
            op = rng.random()
            if op < 0.6 or not ids:
                a = Attempt(
                    "d", f"x{step}", f"u{rng.randrange(8)}", rng.randint(1, 3), f"k{rng.randrange(30)}", now
                )
                got = [await led.reserve(a) for led in (memory, red)]
                assert got[0] == got[1], step
                if got[0].outcome is Outcome.HELD:
                    ids.append(a.reservation_id)
            elif op < 0.75:
                rid = rng.choice(ids)
                assert await memory.give_back("d", rid) == await red.give_back("d", rid), step
            elif op < 0.85:
                rid = rng.choice(ids)
                assert await memory.settle("d", rid) == await red.settle("d", rid), step
            else:
                due = [await led.due(["d"], now, limit=100) for led in (memory, red)]
                assert {d.reservation_id for d in due[0].get("d", [])} == {
                    d.reservation_id for d in due[1].get("d", [])
                }, step
        assert await memory.levels(["d"]) == await red.levels(["d"])
        assert await memory.held_keys("d") == await red.held_keys("d")
    finally:
        await connections.aclose()
        await client.aclose()
