"""Flash sales across real `livemart serve` processes over one Redis and one PostgreSQL.

Every reservation goes through the public interface (WS `reserve`, HTTP reservations);
the checks read SQL and the processes' own answers afterwards.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from loadtest.httpclient import HttpClient, Response
from tests.processes import TEST_API_KEY, TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import WsClient, WsError

#: Reservations are bursty by nature; the per-connection command budget is not under test.
ENV = {
    "LIVEMART_COMMAND_RATE": "100000",
    "LIVEMART_COMMAND_BURST": "100000",
    "LIVEMART_SWEEP_INTERVAL_S": "0.2",
}


#: Keep-alive connections per process. The load generator's small client is used rather
#: than httpx, whose pool costs milliseconds per request on a loaded 2-core machine.
HTTP_CONNECTIONS = 100


def bearer(user: str) -> str:
    return token(user, user.upper(), TEST_SECRET)


@dataclass
class Cluster:
    servers: list[LivemartProcess]
    database_url: str
    redis_url: str
    prefix: str
    http: list[HttpClient]

    async def call(
        self,
        method: str,
        path: str,
        user: str | None = None,
        *,
        server: int = 0,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        token = None if user is None else bearer(user)
        return await self.http[server].request(method, path, json=json, token=token, headers=headers)

    async def ok(self, method: str, path: str, user: str | None = None, **kw: Any) -> Any:
        response = await self.call(method, path, user, **kw)
        assert response.ok, (response.status, response.body)
        return response.json()

    async def reserve(self, sale_id: str, user: str, key: str, *, server: int, quantity: int = 1) -> Response:
        return await self.call(
            "POST",
            f"/api/flash-sales/{sale_id}/reservations",
            user,
            server=server,
            json={"quantity": quantity},
            headers={"Idempotency-Key": key},
        )

    async def open_sale(self, owner: str = "merchant", **terms: Any) -> tuple[str, dict[str, Any]]:
        room = await self.ok("POST", "/api/rooms", owner, json={"title": "Drop"})
        product = await self.ok(
            "POST", "/api/products", owner, json={"title": "Sneaker", "price_cents": 5000, "currency": "USD"}
        )
        body = {"product_id": product["id"], "room_id": room["id"], "stock": 100, "per_user_limit": 1}
        sale = await self.ok("POST", "/api/flash-sales", owner, json={**body, **terms})
        return str(room["id"]), sale

    async def remaining(self, sale_id: str, server: int) -> int:
        value: int = (await self.ok("GET", f"/api/flash-sales/{sale_id}", server=server))["remaining"]
        return value

    async def rows(self, sale_id: str) -> list[Any]:
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    sa.text(
                        "SELECT id, user_id, quantity, status FROM commerce_reservations WHERE sale_id = :s"
                    ),
                    {"s": sale_id},
                )
                return list(result)
        finally:
            await engine.dispose()

    async def order_count(self, sale_id: str) -> dict[str, int]:
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    sa.text(
                        "SELECT reservation_id, count(*) FROM commerce_orders WHERE sale_id = :s GROUP BY 1"
                    ),
                    {"s": sale_id},
                )
                return {row[0]: row[1] for row in result}
        finally:
            await engine.dispose()


@asynccontextmanager
async def cluster(
    livemart: ProcessGroup, redis_url: str, prefix: str, database_url: str, n: int = 2
) -> AsyncIterator[Cluster]:
    servers = [
        livemart.start(database_url=database_url, redis_url=redis_url, redis_prefix=prefix, env=ENV)
        for _ in range(n)
    ]
    http = [HttpClient(s.url, max_connections=HTTP_CONNECTIONS, timeout=30.0) for s in servers]
    try:
        yield Cluster(servers, database_url, redis_url, prefix, http)
    finally:
        await asyncio.gather(*(client.close() for client in http))


@dataclass
class Tally:
    """Every answer of a burst: successes by (user, key), and error codes."""

    held: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    errors: Counter[str] = field(default_factory=Counter)

    def ids_by_user(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for (user, _), ids in self.held.items():
            out[user] |= ids
        return out


async def connect_all(urls: Sequence[str], users: Sequence[str]) -> list[WsClient]:
    clients: list[WsClient] = []
    for start in range(0, len(users), 100):
        batch = users[start : start + 100]
        clients += await asyncio.gather(
            *(
                WsClient.connect(urls[i % len(urls)], token(u, u.upper(), TEST_SECRET), timeout=30.0)
                for i, u in enumerate(batch, start)
            )
        )
    return clients


async def subscribe(server: LivemartProcess, room_id: str) -> WsClient:
    watcher = await WsClient.connect(server.ws_url, token("watcher", "W", TEST_SECRET))
    await watcher.call("subscribe", ch=f"room:{room_id}")
    return watcher


def last_stock(pushes: list[dict[str, Any]], sale_id: str) -> dict[str, Any]:
    """The newest stock figure a client would keep (highest version)."""
    stock = [p["data"] for p in pushes if p["ev"] == "stock" and p["data"]["sale_id"] == sale_id]
    return max(stock, key=lambda d: d["version"])


async def drain(client: WsClient) -> list[dict[str, Any]]:
    got = []
    while not client.pushes.empty():
        got.append(client.pushes.get_nowait())
    return got


@pytest.mark.slow
async def test_two_processes_5000_attempts_exactly_100_holds(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    rng = random.Random(7)
    async with cluster(livemart, redis_url, redis_prefix, postgres_url) as c:
        room_id, sale = await c.open_sale(stock=100, per_user_limit=1)
        sale_id = sale["id"]
        watchers = [await subscribe(s, room_id) for s in c.servers]
        ws_users = [f"w{i}" for i in range(800)]
        http_users = [f"h{i}" for i in range(1200)]
        clients = await connect_all([s.ws_url for s in c.servers], ws_users)

        # 5,000 attempts: 2 or 3 per user, some replaying a key (over the other process).
        plan: list[tuple[str, str, str, int]] = []  # (channel, user, key, server)
        for i, user in enumerate([*ws_users, *http_users]):
            channel = "ws" if user.startswith("w") else "http"
            tries = 3 if i % 2 else 2
            for t in range(tries):
                key = f"{user}-k{0 if t == 1 and i % 3 == 0 else t}"
                plan.append((channel if t < 2 else "http", user, key, (i + t) % 2))
        plan = plan[:5000]
        assert len(plan) == 5000
        rng.shuffle(plan)
        tally = Tally()
        by_user = dict(zip(ws_users, clients, strict=True))

        async def attempt(channel: str, user: str, key: str, server: int) -> None:
            try:
                if channel == "ws":
                    reply = await by_user[user].call("reserve", sale=sale_id, quantity=1, key=key)
                    tally.held[(user, key)].add(reply["id"])
                else:
                    response = await c.reserve(sale_id, user, key, server=server)
                    if response.status == 201:
                        tally.held[(user, key)].add(response.json()["id"])
                    else:
                        tally.errors[response.error_code()] += 1
            except WsError as exc:
                tally.errors[exc.code] += 1

        await asyncio.gather(*(attempt(*p) for p in plan))

        ids_by_user = tally.ids_by_user()
        all_ids = set().union(*ids_by_user.values())
        assert len(all_ids) == 100, tally.errors
        assert all(len(ids) == 1 for ids in ids_by_user.values()), "a user holds more than the limit"
        assert all(len(ids) == 1 for ids in tally.held.values()), "one key gave two reservations"
        assert set(tally.errors) <= {"sold_out", "limit_exceeded"}, tally.errors

        rows = await c.rows(sale_id)
        assert sorted(r.id for r in rows) == sorted(all_ids), "every hold has exactly one SQL row"
        assert {r.status for r in rows} == {"held"}
        assert [await c.remaining(sale_id, s) for s in range(2)] == [0, 0]
        redis = aioredis.Redis.from_url(redis_url)
        try:
            assert await redis.hlen(f"{redis_prefix}{{sale:{sale_id}}}:u") == 100
        finally:
            await redis.aclose()
        for watcher in watchers:  # every process's room subscribers end on 0
            pushes = await watcher.pushes_until(lambda p: p["ev"] == "stock" and p["data"]["remaining"] == 0)
            pushes += await drain(watcher)
            assert last_stock(pushes, sale_id)["remaining"] == 0
        await asyncio.gather(*(client.close() for client in [*clients, *watchers]))


@pytest.mark.slow
async def test_holds_expire_and_confirmed_ones_become_one_order_each(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    async with cluster(livemart, redis_url, redis_prefix, postgres_url) as c:
        room_id, sale = await c.open_sale(stock=10, per_user_limit=1, hold_seconds=2)
        sale_id = sale["id"]
        watcher = await subscribe(c.servers[1], room_id)
        held = {}
        for i in range(10):
            response = await c.reserve(sale_id, f"b{i}", "once", server=i % 2)
            assert response.status == 201
            held[f"b{i}"] = response.json()["id"]
        payers = [f"b{i}" for i in range(0, 10, 2)]
        confirms = await asyncio.gather(
            *(
                c.call("POST", f"/api/reservations/{held[u]}/confirm", u, server=s)
                for u in payers
                for s in (0, 1)  # each payer confirms twice, once on each process
            )
        )
        assert sorted(r.status for r in confirms) == [200] * 5 + [409] * 5
        assert await c.remaining(sale_id, 0) == 0

        def stock_at(n: int) -> Callable[[dict[str, Any]], bool]:
            return lambda p: p["ev"] == "stock" and p["data"]["remaining"] == n

        pushes = await watcher.pushes_until(stock_at(0))  # sold out while holding
        pushes += await watcher.pushes_until(stock_at(5), timeout=8.0)  # then the expiry
        assert [await c.remaining(sale_id, s) for s in (0, 1)] == [5, 5]
        late = await c.call("POST", f"/api/reservations/{held['b1']}/confirm", "b1")
        assert (late.status, late.error_code()) == (410, "expired")
        statuses = Counter(r.status for r in await c.rows(sale_id))
        assert statuses == {"confirmed": 5, "expired": 5}
        orders = await c.order_count(sale_id)
        assert sorted(orders) == sorted(held[u] for u in payers) and set(orders.values()) == {1}
        purchases = [p for p in [*pushes, *await drain(watcher)] if p["ev"] == "purchase"]
        assert sum(p["data"]["count"] for p in purchases) == 5
        await watcher.close()


@pytest.mark.slow
async def test_redis_flushed_mid_sale_then_reconciled(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """Lose every key of this deployment during a burst: no unit sold twice, none lost."""
    async with cluster(livemart, redis_url, redis_prefix, postgres_url) as c:
        _, sale = await c.open_sale(stock=60, per_user_limit=1, hold_seconds=60)
        sale_id = sale["id"]
        answers: dict[tuple[str, str], set[str]] = defaultdict(set)
        errors: Counter[str] = Counter()
        some_held = asyncio.Event()

        async def attempt(user: str, key: str, server: int) -> None:
            response = await c.reserve(sale_id, user, key, server=server)
            if response.status == 201:
                answers[(user, key)].add(response.json()["id"])
                if len(answers) >= 5:
                    some_held.set()
            else:
                errors[response.error_code()] += 1

        async def lose_redis_state() -> None:
            await some_held.wait()  # a quarter of the first half answered, the rest in flight
            redis = aioredis.Redis.from_url(redis_url)
            try:
                keys = [k async for k in redis.scan_iter(match=f"{redis_prefix}*", count=1000)]
                await redis.delete(*keys)  # one DEL: every key vanishes at one instant
            finally:
                await redis.aclose()

        wave_a = [(f"a{i}", f"a{i}-key", i % 2) for i in range(40)]
        # Half the wave around the loss (some answered before it, the rest racing it), the
        # other half after it: however fast the first half went, the loss is then met.
        await asyncio.gather(lose_redis_state(), *(attempt(*a) for a in wave_a[:20]))
        await asyncio.gather(*(attempt(*a) for a in wave_a[20:]))
        assert await rebuilds(c, "missing") >= 1, "the loss was noticed by a reservation or a sweep"
        await c.ok("POST", f"/api/flash-sales/{sale_id}/reconcile", headers={"x-api-key": TEST_API_KEY})
        first_answers = {k: set(v) for k, v in answers.items()}
        wave_b = [(f"b{i}", f"b{i}-key", i % 2) for i in range(200)]
        replays = [(user, key, 1 - server) for user, key, server in wave_a]
        await asyncio.gather(*(attempt(*a) for a in [*wave_b, *replays]))

        assert all(len(ids) == 1 for ids in answers.values()), "a key gave two reservations"
        for key, ids in first_answers.items():
            assert answers[key] == ids, "a replay after the loss returned another reservation"
        held = set().union(*answers.values())
        assert len(held) == 60, errors
        live = {r.id for r in await c.rows(sale_id) if r.status == "held"}
        assert held == live, "every reservation a client got is in SQL, and only those"
        assert [await c.remaining(sale_id, s) for s in (0, 1)] == [0, 0]
        assert set(errors) <= {"sold_out", "unavailable"}, errors


async def rebuilds(c: Cluster, reason: str) -> float:
    """Ledger rebuilds for ``reason`` summed over the processes (their /metrics)."""
    total = 0.0
    for client in c.http:
        text = (await client.request("GET", "/metrics")).body.decode()
        for line in text.splitlines():
            if line.startswith(f'livemart_ledger_rebuilds_total{{reason="{reason}"}}'):
                total += float(line.split()[-1])
    return total


@pytest.mark.slow
async def test_restarted_cluster_keeps_holds_and_keys(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """Redis emptied while every process is down: start-up rebuilds from SQL."""
    async with cluster(livemart, redis_url, redis_prefix, postgres_url, n=1) as c:
        _, sale = await c.open_sale(stock=5, per_user_limit=2)
        first = (await c.reserve(sale["id"], "a", "K", server=0, quantity=2)).json()
        c.servers[0].terminate()
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await redis.delete(*[k async for k in redis.scan_iter(match=f"{redis_prefix}*")])
        finally:
            await redis.aclose()
        c.servers[0] = livemart.start(
            database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix, env=ENV
        )
        await c.http[0].close()
        c.http[0] = HttpClient(c.servers[0].url, timeout=30.0)
        assert await c.remaining(sale["id"], 0) == 3
        again = (await c.reserve(sale["id"], "a", "K", server=0, quantity=2)).json()
        assert again["id"] == first["id"]
        assert await c.remaining(sale["id"], 0) == 3
