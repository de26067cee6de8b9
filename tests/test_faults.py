"""Faults with real processes: a process killed mid-stream, dependencies going away.

Clients here behave like the web client: on a dropped connection they reconnect to
another process and resubscribe with ``since``; the test then checks that every viewer
saw every comment exactly once, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.services import PostgresCluster
from tests.wsclient import WsClient, WsClosed, WsError

VIEWERS = 2000
COMMENTS = 30
KILL_AFTER = 10

#: No sampling and a generous per-user rate: this test is about loss, not budgets.
ROOM_ENV = {
    "LIVEMART_COMMENT_RATE": "100",
    "LIVEMART_COMMENT_BURST": "100",
    "LIVEMART_COMMENT_BUDGET": "100000",
}


@dataclass
class Viewer:
    """A room viewer that reconnects elsewhere and recovers, like the web client."""

    servers: list[LivemartProcess]
    home: int
    room: str
    texts: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    reconnects: int = 0
    recovered: list[bool] = field(default_factory=list)
    epoch: str = ""
    joined_at: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, push: dict[str, object]) -> None:
        if push.get("ev") == "comment":
            off = int(push["off"])  # type: ignore[call-overload]
            self.offsets.append(off)
            self.texts.append(str(push["data"]["text"]))  # type: ignore[index]
            if len(self.texts) >= COMMENTS:
                self.done.set()

    async def join(self) -> WsClient:
        client = await WsClient.connect(self.servers[self.home].ws_url, timeout=30)
        reply = await client.call("subscribe", ch=f"room:{self.room}")
        self.epoch, self.joined_at = reply["epoch"], reply["off"]
        return client

    async def run(self, client: WsClient) -> None:
        last = self.joined_at
        while not self.done.is_set():
            try:
                push = await client.next_push(timeout=60)
                self.take(push)
            except WsClosed:
                await client.close()
                self.reconnects += 1
                alive = [s for s in self.servers if s.returncode is None]
                server = alive[self.reconnects % len(alive)]
                client = await WsClient.connect(server.ws_url, timeout=30)
                since = {"off": self.offsets[-1] if self.offsets else last, "epoch": self.epoch}
                reply = await client.call("subscribe", ch=f"room:{self.room}", since=since)
                self.recovered.append(reply["recovered"])
                for push in reply["missed"]:
                    self.take(push)
        await client.close()


@pytest.mark.slow
async def test_kill_one_of_three_during_a_comment_stream(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    servers = [
        livemart.start(
            redis_url=redis_url, redis_prefix=redis_prefix, database_url=postgres_url, env=ROOM_ENV
        )
        for _ in range(3)
    ]
    host = token("host", "Host", TEST_SECRET)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {host}"}) as http:
        room = (await http.post(f"{servers[0].url}/api/rooms", json={"title": "fault"})).json()["id"]

    viewers = [Viewer(servers, i % 3, str(room)) for i in range(VIEWERS)]
    tasks = []
    for start in range(0, VIEWERS, 100):  # ramp up, as real audiences do
        batch = viewers[start : start + 100]
        clients = await asyncio.gather(*(v.join() for v in batch))
        tasks += [asyncio.create_task(v.run(c)) for v, c in zip(batch, clients, strict=True)]

    async with await WsClient.connect(servers[0].ws_url, token=token("c", "C", TEST_SECRET)) as commenter:
        for i in range(COMMENTS):
            if i == KILL_AFTER:
                os.kill(servers[2].pid, signal.SIGKILL)
            await commenter.call("comment", room=str(room), text=f"c{i}")
            await asyncio.sleep(0.1)
    async with asyncio.timeout(120):
        await asyncio.gather(*tasks)

    expected = [f"c{i}" for i in range(COMMENTS)]
    moved = [v for v in viewers if v.home == 2]
    assert all(v.reconnects >= 1 for v in moved)
    assert all(all(v.recovered) for v in moved), "every reconnect recovered from history"
    for viewer in viewers:
        assert viewer.texts == expected, "no gap, no duplicate, in order"
        assert viewer.offsets == sorted(set(viewer.offsets))


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL of this test's own, so it can be stopped without touching anyone else's."""
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()


@pytest.mark.slow
async def test_group_sends_through_a_postgres_outage(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, private_postgres: PostgresCluster
) -> None:
    server = livemart.start(redis_url=redis_url, redis_prefix=redis_prefix, database_url=private_postgres.url)
    owner, member = token("owner", "Owner", TEST_SECRET), token("m1", "Mei", TEST_SECRET)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        group = (await http.post("/api/groups", json={"name": "vip"}, headers=bearer(owner))).json()["id"]
        code = (await http.post(f"/api/groups/{group}/invites", headers=bearer(owner))).json()["code"]
        joined = await http.post("/api/groups/join", json={"code": code}, headers=bearer(member))
        assert joined.status_code < 300

    reader = await WsClient.connect(server.ws_url, token=member, timeout=15)
    await reader.call("subscribe", ch=f"group:{group}")
    sender = await WsClient.connect(server.ws_url, token=owner, timeout=15)
    acked: dict[str, int] = {}
    refused: list[str] = []

    async def send(i: int) -> None:
        try:
            reply = await sender.call("group.send", group=str(group), text=f"m{i}", client_msg_id=f"c{i}")
            acked[f"c{i}"] = reply["seq"]
        except WsError as exc:
            assert exc.code == "unavailable", exc
            refused.append(f"c{i}")

    for i in range(20):
        await send(i)
    await asyncio.to_thread(private_postgres.pause)
    outage_started = time.monotonic()
    i = 20
    while time.monotonic() - outage_started < 10:
        await send(i)
        i += 1
        await asyncio.sleep(0.2)
    await asyncio.to_thread(private_postgres.resume)
    assert refused, "sends during the outage must fail, not hang or pretend"

    async with asyncio.timeout(30):  # the service comes back by itself
        while True:
            before = len(acked)
            await send(i)
            i += 1
            if len(acked) > before:
                break
            await asyncio.sleep(0.5)
    for client_msg_id in refused:  # a retry with the same id is safe
        number = int(client_msg_id[1:])
        await send(number)
    assert set(acked) == {f"c{n}" for n in range(i)} - {c for c in refused if c not in acked}

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        history = await http.get(
            f"/api/groups/{group}/messages", params={"after": 0, "limit": 500}, headers=bearer(member)
        )
    stored = {m["seq"]: m["text"] for m in history.json()["messages"]}
    assert sorted(stored) == list(range(1, len(stored) + 1)), "no gaps"
    for client_msg_id, seq in acked.items():
        assert stored[seq] == f"m{client_msg_id[1:]}", "every acknowledged message is durable"
    pushes = await reader.pushes_until(lambda p: p.get("off") == max(stored), timeout=15)
    seqs = [p["off"] for p in pushes if p.get("ev") == "message"]
    assert seqs == sorted(stored), "members received each durable message once, in order"
    await reader.close()
    await sender.close()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.slow
async def test_kill_one_of_three_during_a_flash_sale(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    servers = [
        livemart.start(redis_url=redis_url, redis_prefix=redis_prefix, database_url=postgres_url)
        for _ in range(3)
    ]
    merchant = bearer(token("merchant", "Shop", TEST_SECRET))
    async with httpx.AsyncClient(timeout=10) as http:
        product = (
            await http.post(
                f"{servers[0].url}/api/products",
                json={"title": "lipstick", "price_cents": 9900, "currency": "CNY"},
                headers=merchant,
            )
        ).json()
        sale = (
            await http.post(
                f"{servers[0].url}/api/flash-sales",
                json={"product_id": product["id"], "stock": 100, "price_cents": 4900,
                      "per_user_limit": 1, "hold_seconds": 120},
                headers=merchant,
            )
        ).json()  # fmt: skip

    users = 300
    holds: dict[str, set[str]] = {}
    outcomes: dict[str, int] = {}

    async def buyer(n: int, http: httpx.AsyncClient) -> None:
        """Reserve, then send the same request again, as after a lost reply: both must
        name the same reservation. Either send goes to another process if one dies."""
        headers = {**bearer(token(f"b{n}", f"B{n}", TEST_SECRET)), "Idempotency-Key": f"k{n}"}
        sends = 0
        for attempt in range(20):
            server = servers[(n + attempt) % 3]
            if server.returncode is not None:
                continue
            try:
                reply = await http.post(
                    f"{server.url}/api/flash-sales/{sale['id']}/reservations",
                    json={"quantity": 1, "source": "room"},
                    headers=headers,
                )
            except httpx.TransportError:
                continue
            code = "held" if reply.status_code == 201 else reply.json()["error"]["code"]
            if code == "unavailable":  # as the contract says: retry, with the same key
                outcomes[code] = outcomes.get(code, 0) + 1
                await asyncio.sleep(0.2)
                continue
            sends += 1
            if sends == 2:
                assert code == "held", f"buyer {n}: the same key again answered {code}"
                holds[f"b{n}"].add(reply.json()["id"])
                return
            outcomes[code] = outcomes.get(code, 0) + 1
            if code != "held":
                return
            holds[f"b{n}"] = {reply.json()["id"]}
        raise AssertionError(f"buyer {n}: no answer in 20 attempts ({outcomes})")

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=100)) as http:
        first = [asyncio.create_task(buyer(n, http)) for n in range(users // 2)]
        await asyncio.sleep(0.2)
        os.kill(servers[2].pid, signal.SIGKILL)
        rest = [asyncio.create_task(buyer(n, http)) for n in range(users // 2, users)]
        await asyncio.gather(*first, *rest)
        remaining = [
            (await http.get(f"{server.url}/api/flash-sales/{sale['id']}")).json()["remaining"]
            for server in servers[:2]
        ]

    assert all(len(ids) == 1 for ids in holds.values()), "one reservation per user, retries included"
    assert len(holds) == 100, f"exactly the stock was held: {outcomes}"
    assert remaining == [0, 0]
