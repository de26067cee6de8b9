"""The whole server on a three-master Redis Cluster (issue 8).

Two real `livemart serve` processes share a private Redis Cluster (started from the
redis-server binary) and one PostgreSQL database: rooms on different shards, a flash
sale, a group chat, and then one master restarted empty in the middle of a comment
stream and a sale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import httpx
import pytest

from tests.processes import TEST_API_KEY, TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.services import (
    RedisClusterNodes,
    create_database,
    database_url_for,
    drop_database,
    unique_database_name,
    unique_prefix,
)
from tests.test_redis_cluster import shard_of
from tests.wsclient import Push, WsClient, WsClosed, WsError

pytestmark = pytest.mark.slow

#: No comment sampling and generous rates: these tests count every delivery.
ENV = {
    "LIVEMART_COMMENT_RATE": "100",
    "LIVEMART_COMMENT_BURST": "100",
    "LIVEMART_COMMENT_BUDGET": "100000",
    "LIVEMART_COMMAND_RATE": "100000",
    "LIVEMART_COMMAND_BURST": "100000",
}


@dataclass
class App:
    servers: list[LivemartProcess]
    nodes: RedisClusterNodes


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str, redis_cluster: RedisClusterNodes
) -> Iterator[App]:
    """Two processes on the cluster, shared by this module's tests (each works in rooms
    and sales of its own; the restart test comes last)."""
    group = ProcessGroup(tmp_path_factory.mktemp("cluster-app"))
    database = unique_database_name()
    create_database(postgres_admin_url, database)
    try:
        url = database_url_for(postgres_admin_url, database)
        prefix = unique_prefix()
        a = group.start(database_url=url, redis_url=redis_cluster.url, redis_prefix=prefix, env=ENV)
        b = group.start(
            database_url=url, redis_url=redis_cluster.url, redis_prefix=prefix, env=ENV, args=["--no-migrate"]
        )
        yield App([a, b], redis_cluster)
    finally:
        group.kill_all()
        drop_database(postgres_admin_url, database)


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, user.title(), TEST_SECRET)}"}


def shard(app: App, tag: str) -> int:
    return shard_of(app.nodes, "{" + tag + "}")


async def create_room(server: LivemartProcess) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.post("/api/rooms", json={"title": "Live sale"}, headers=bearer("host"))
    assert response.status_code == 201, response.text
    room: str = response.json()["id"]
    return room


async def open_sale(server: LivemartProcess, stock: int) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer("merchant")) as http:
        product = await http.post(
            "/api/products", json={"title": "lipstick", "price_cents": 9900, "currency": "CNY"}
        )
        body = {
            "product_id": product.json()["id"],
            "stock": stock,
            "price_cents": 4900,
            "per_user_limit": 1,
            "hold_seconds": 300,
        }
        sale = await http.post("/api/flash-sales", json=body)
    assert sale.status_code == 201, sale.text
    sale_id: str = sale.json()["id"]
    return sale_id


async def remaining(server: LivemartProcess, sale: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        left: int = (await http.get(f"/api/flash-sales/{sale}")).json()["remaining"]
    return left


@dataclass
class Buyers:
    """Buyers who retry with the same Idempotency-Key, on either process, until answered."""

    servers: list[LivemartProcess]
    sale: str
    #: Every reservation id each user was given (a retry must give the same one).
    held: dict[str, set[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    retries: int = 0

    async def buy(self, http: httpx.AsyncClient, n: int) -> None:
        user = f"buyer{n}"
        headers = {**bearer(user), "Idempotency-Key": f"{self.sale}-{n}"}
        for attempt in range(60):
            server = self.servers[(n + attempt) % len(self.servers)]
            try:
                reply = await http.post(
                    f"{server.url}/api/flash-sales/{self.sale}/reservations",
                    json={"quantity": 1},
                    headers=headers,
                )
            except httpx.TransportError:
                reply = None
            if reply is not None and reply.status_code == 201:
                self.held.setdefault(user, set()).add(reply.json()["id"])
                return
            if reply is not None and reply.status_code != 503:
                self.refused[user] = reply.json()["error"]["code"]
                return
            self.retries += 1
            await asyncio.sleep(0.2)
        raise AssertionError(f"{user} got no answer")


# --- a healthy cluster ------------------------------------------------------------


class Recorder:
    """A WebSocket client that keeps every push it read, so waits can look back."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.pushes: list[Push] = []

    async def wait(self, match: Callable[[Push], bool], timeout: float = 15) -> Push:
        for push in self.pushes:
            if match(push):
                return push
        got = await self.client.pushes_until(match, timeout=timeout)
        self.pushes += got
        return got[-1]

    def comments(self) -> list[tuple[int, str]]:
        return [(p["off"], p["data"]["text"]) for p in self.pushes if p.get("ev") == "comment"]


async def test_rooms_sales_and_groups_work_across_shards_and_processes(app: App) -> None:
    a, b = app.servers
    rooms: dict[int, str] = {}
    while len(rooms) < 2:  # rooms on two different masters
        room = await create_room(a)
        rooms.setdefault(shard(app, f"room:{room}"), room)
    async with AsyncExitStack() as stack:

        async def connect(server: LivemartProcess, user: str | None) -> WsClient:
            bearer_token = None if user is None else token(user, user.title(), TEST_SECRET)
            return await stack.enter_async_context(await WsClient.connect(server.ws_url, bearer_token))

        viewers: dict[str, list[Recorder]] = {}
        for room in rooms.values():
            viewers[room] = [Recorder(await connect(server, None)) for server in (a, b, a, b)]
            for viewer in viewers[room]:
                await viewer.client.call("subscribe", ch=f"room:{room}")
        authors = [await connect(a, "ann"), await connect(b, "bob")]

        # Comments from both processes into both rooms: everyone sees each one, in order.
        acked: dict[str, list[tuple[int, str]]] = {room: [] for room in rooms.values()}
        for i in range(20):
            for room in rooms.values():
                reply = await authors[i % 2].call("comment", room=room, text=f"{room}/{i}")
                acked[room].append((reply["off"], f"{room}/{i}"))
        for room in rooms.values():
            for viewer in viewers[room]:
                await viewer.wait(lambda p, room=room: p.get("data", {}).get("text") == f"{room}/19")
                assert viewer.comments() == acked[room]

        # Likes from both processes add up; viewers are counted over both processes.
        await asyncio.gather(
            *(authors[i % 2].call("like", room=room, count=5) for i in range(20) for room in rooms.values())
        )
        for room in rooms.values():
            watcher = viewers[room][1]
            await watcher.wait(lambda p: p.get("ev") == "likes" and p["data"]["total"] == 100)
            await watcher.wait(lambda p: p.get("ev") == "viewers" and p["data"]["count"] == 4)
            for server in (a, b):
                async with httpx.AsyncClient(base_url=server.url) as http:
                    shown = (await http.get(f"/api/rooms/{room}")).json()
                assert (shown["likes"], shown["viewers"]) == (100, 4)

        # A flash sale sells exactly its stock to buyers on both processes.
        sale = await open_sale(a, stock=30)
        buyers = Buyers([a, b], sale)
        async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=90)) as http:
            await asyncio.gather(*(buyers.buy(http, n) for n in range(90)))
        assert len(buyers.held) == 30 and all(len(ids) == 1 for ids in buyers.held.values())
        assert set(buyers.refused.values()) == {"sold_out"} and len(buyers.refused) == 60
        assert [await remaining(server, sale) for server in (a, b)] == [0, 0]

        # A group message sent on one process reaches a member on the other.
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
            group = (await http.post("/api/groups", json={"name": "vip"}, headers=bearer("owner"))).json()[
                "id"
            ]
            invite = await http.post(f"/api/groups/{group}/invites", headers=bearer("owner"))
            code = invite.json()["code"]
            joined = await http.post("/api/groups/join", json={"code": code}, headers=bearer("mei"))
            assert joined.status_code < 300, joined.text
        member = Recorder(await connect(b, "mei"))
        await member.client.call("subscribe", ch=f"group:{group}")
        owner = await connect(a, "owner")
        sent = await owner.call("group.send", group=str(group), text="members only", client_msg_id="m1")
        message = await member.wait(lambda p: p.get("ev") == "message")
        assert (message["off"], message["data"]["text"]) == (sent["seq"], "members only")


# --- a master restarted empty -----------------------------------------------------


@dataclass
class Follower:
    """A room viewer that reconnects and resubscribes with ``since``, like the web client:
    after a resync (``recovered: false``) the snapshot's comments replace what it had."""

    server: LivemartProcess
    room: str
    #: Comment indexes as the viewer's list shows them, oldest first.
    seen: list[int] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    recovered: list[bool] = field(default_factory=list)
    #: How many comments were acknowledged when the last (re)subscription was answered.
    joined_after: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, push: Push) -> None:
        if push.get("ev") == "comment":
            self.seen.append(int(push["data"]["text"].rsplit("/", 1)[1]))

    async def run(self, last: int, acked: list[int]) -> None:
        """Follow the room until comment ``last`` is on the list."""
        client = await WsClient.connect(self.server.ws_url, timeout=30)
        reply = await client.call("subscribe", ch=f"room:{self.room}")
        epoch, offset = reply["epoch"], reply["off"]
        self.ready.set()
        try:
            while last not in self.seen:
                try:
                    push = await client.next_push(timeout=20)
                except WsClosed as closed:
                    self.closes.append(closed.code)
                    await client.close()
                    client = await WsClient.connect(self.server.ws_url, timeout=30)
                    since = {"off": offset, "epoch": epoch}
                    reply = await client.call("subscribe", ch=f"room:{self.room}", since=since)
                    self.joined_after = len(acked)
                    self.recovered.append(reply["recovered"])
                    epoch, offset = reply["epoch"], reply["off"]
                    if reply["recovered"]:
                        for missed in reply["missed"]:
                            self.take(missed)
                    else:
                        snapshot = [int(c["text"].rsplit("/", 1)[1]) for c in reply["state"]["comments"]]
                        self.seen = [i for i in self.seen if not snapshot or i < snapshot[0]] + snapshot
                    continue
                if push.get("ev") == "comment":
                    offset = max(offset, push["off"])
                self.take(push)
        finally:
            await client.close()


async def comment_stream(
    servers: list[LivemartProcess],
    room: str,
    count: int,
    acked: list[int],
    retried: set[int],
    restart: asyncio.Event,
) -> float:
    """``count`` comments at 10 per second from both processes, retried while unavailable;
    returns the longest time between two acknowledgements (s).

    A comment refused as ``unavailable`` may still have been published (its reply was
    lost with the connection), so a retried one may arrive twice: ``retried`` says which.
    """
    loop = asyncio.get_running_loop()
    longest, last = 0.0, loop.time()
    async with AsyncExitStack() as stack:
        authors = [
            await stack.enter_async_context(
                await WsClient.connect(server.ws_url, token(f"author{i}", "Author", TEST_SECRET))
            )
            for i, server in enumerate(servers)
        ]
        for i in range(count):
            if i == count // 3:
                restart.set()
            for _ in range(100):
                try:
                    await authors[i % 2].call("comment", room=room, text=f"{room}/{i}")
                    break
                except WsError as exc:
                    assert exc.code == "unavailable", exc
                    retried.add(i)
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"comment {i} in room {room} never went through")
            acked.append(i)
            longest, last = max(longest, loop.time() - last), loop.time()
            await asyncio.sleep(0.1)
    return longest


async def test_a_master_restarted_empty_mid_stream(app: App) -> None:
    """What a shard's restart costs: its rooms resync and go on, its sale is rebuilt from
    SQL (no unit sold twice, none stranded), and rooms on other shards notice nothing."""
    a, b = app.servers
    sale = await open_sale(a, stock=60)
    victim = shard(app, f"sale:{sale}")
    hit = other = ""
    while not (hit and other):
        room = await create_room(a)
        if shard(app, f"room:{room}") == victim:
            hit = hit or room
        else:
            other = other or room
    async with await WsClient.connect(a.ws_url, token("host", "Host", TEST_SECRET)) as host:
        await host.call("moderate", room=hit, user_id="troll", action="ban")

    buyers = Buyers([a, b], sale)
    comments = 45
    acked: dict[str, list[int]] = {hit: [], other: []}
    retried: dict[str, set[int]] = {hit: set(), other: set()}
    followers = [Follower(server, room) for room in (hit, other) for server in (a, b, a, b)]
    watching = [asyncio.create_task(f.run(comments - 1, acked[f.room])) for f in followers]
    for follower in followers:
        await asyncio.wait_for(follower.ready.wait(), 15)
    restart = asyncio.Event()
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=100)) as http:
        await asyncio.gather(*(buyers.buy(http, n) for n in range(30)))  # half the stock, before
        streams = [
            asyncio.create_task(comment_stream([a, b], room, comments, acked[room], retried[room], restart))
            for room in (hit, other)
        ]
        await restart.wait()
        restarting = asyncio.create_task(asyncio.to_thread(app.nodes.restart, victim))
        late = [asyncio.create_task(buyers.buy(http, n)) for n in range(30, 150)]
        await asyncio.gather(restarting, *late)
        pauses = await asyncio.gather(*streams)
    await asyncio.wait_for(asyncio.gather(*watching), 30)

    # Every follower got every comment published after it (re)joined, in order, and none
    # twice unless its author had to retry it.
    for follower in followers:
        expected = acked[follower.room]
        assert list(dict.fromkeys(follower.seen)) == sorted(set(follower.seen)), follower
        twice = {i for i in follower.seen if follower.seen.count(i) > 1}
        assert twice <= retried[follower.room], follower
        assert set(expected[follower.joined_after :]) <= set(follower.seen), follower
    for follower in followers:
        if follower.room == hit:  # told to resync (close 4011): the history was gone
            assert follower.closes[:1] == [4011] and follower.recovered[:1] == [False], follower
        else:  # another shard: no reconnect, no loss, nothing out of order. A comment its
            # author had to retry may arrive twice (checked above against ``retried``). That
            # was seen once in ~25 runs, before the batcher had connections of its own: redis-py
            # dropped every node's connections, in-flight commands on this shard included
            # (test_redis_batch.py reproduces it). A retry is still allowed: a master away
            # longer than cluster-node-timeout makes every shard answer CLUSTERDOWN.
            assert follower.closes == [], follower
            assert list(dict.fromkeys(follower.seen)) == list(range(comments)), follower

    # Enforcement came back from SQL: the ban still holds on the emptied master.
    async with await WsClient.connect(b.ws_url, token("troll", "Troll", TEST_SECRET)) as troll:
        with pytest.raises(WsError) as refused:
            await troll.call("comment", room=hit, text="back again")
        assert refused.value.code == "banned"

    # The sale: the ledger was rebuilt from SQL; exactly the stock was held, once per
    # user whatever the retries, and nothing is left stranded.
    assert len(buyers.held) == 60 and all(len(ids) == 1 for ids in buyers.held.values()), buyers
    assert set(buyers.refused.values()) == {"sold_out"}
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as http:
        rebuilt = await http.post(f"/api/flash-sales/{sale}/reconcile", headers={"X-API-Key": TEST_API_KEY})
        assert (rebuilt.json()["remaining"], rebuilt.json()["holds"]) == (0, 60), rebuilt.text
    assert [await remaining(server, sale) for server in (a, b)] == [0, 0]
    missing = await rebuilds(app, "missing")
    assert missing >= 1
    print(
        f"\nshard restart: {buyers.retries} reservation retries, {missing:.0f} ledger rebuild(s), "
        f"{sum(len(f.closes) for f in followers if f.room == hit)} resync(s) of 4 followers; "
        f"longest pause between comments: {pauses[0]:.2f}s on that shard, {pauses[1]:.2f}s on another; "
        f"comments retried on another shard: {len(retried[other])}"
    )


async def rebuilds(app: App, reason: str) -> float:
    """Ledger rebuilds for ``reason``, summed over the processes' /metrics."""
    total = 0.0
    for server in app.servers:
        async with httpx.AsyncClient(base_url=server.url) as http:
            text = (await http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(f'livemart_ledger_rebuilds_total{{reason="{reason}"}}'):
                total += float(line.split()[-1])
    return total
