"""A huge room: 2,000 comments/s over two processes, each viewer held to its budget.

Viewers' comments are sampled to the per-viewer budget (20/s by default) while host
comments, commerce events and the room's end reach every viewer, and every author
still sees all of their own comments. Everything is counted, nothing estimated.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.processes import TEST_API_KEY, TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import Push, WsClient

pytestmark = pytest.mark.slow

BUDGET_PER_S = 20.0
COMMENTS_PER_S = 2000
DURATION_S = 3.0
AUTHORS = 20
VIEWERS_PER_PROCESS = 20
HOST_COMMENTS_PER_S = 5
STOCK_EVENTS_PER_S = 10


class Replies:
    """Counts replies to the raw comment frames; ``done`` is set when all arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


@dataclass
class Tally:
    """What one connection received on the room channel."""

    sampled: int = 0
    priority_offsets: set[int] = field(default_factory=set)
    own_offsets: set[int] = field(default_factory=set)
    ended_at: float | None = None
    #: Replies to comments sent raw (authors only): offsets, and error codes.
    replied_offsets: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    last_reply_at: float = 0.0


async def consume(client: WsClient, me: str | None, host: str, tally: Tally, replies: Replies) -> None:
    """Count pushes until the room ends."""
    while tally.ended_at is None:
        push: Push = await client.next_push(timeout=30)
        if "id" in push:  # a reply to a comment sent with send_raw
            if "ok" in push:
                tally.replied_offsets.add(push["ok"]["off"])
            else:
                tally.errors.append(push["error"]["code"])
            tally.last_reply_at = time.monotonic()
            replies.add()
            continue
        event = push.get("ev")
        if event == "comment":
            author = push["data"]["user_id"]
            if author == host:
                tally.priority_offsets.add(push["off"])
            elif author == me:
                tally.own_offsets.add(push["off"])
            else:
                tally.sampled += 1
        elif event == "stock":
            tally.priority_offsets.add(push["off"])
        elif event == "room.end":
            tally.priority_offsets.add(push["off"])
            tally.ended_at = time.monotonic()


@dataclass
class Paced:
    results: list[Any]
    #: When the first and the last action were started (monotonic seconds).
    first_sent: float
    last_sent: float


async def paced(count: int, rate: float, action: Any) -> Paced:
    """Start ``action(i)`` at a fixed arrival rate (open loop), then gather the results."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    first = time.monotonic()
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(action(i)))
    last = time.monotonic()
    return Paced(await asyncio.gather(*tasks, return_exceptions=True), first, last)


def sampled_out(metrics_text: str) -> float:
    match = re.search(r"^livemart_sampled_out_total (\S+)$", metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_a_flooded_room_delivers_the_budget_and_every_priority_event(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str, stack: AsyncExitStack
) -> None:
    env = {
        # Authors here post 100 comments/s each, far above a normal user's limit.
        "LIVEMART_COMMENT_RATE": "1000",
        "LIVEMART_COMMENT_BURST": "1000",
        "LIVEMART_COMMAND_RATE": "1000",
        "LIVEMART_COMMAND_BURST": "1000",
        "LIVEMART_COMMENT_BUDGET": str(BUDGET_PER_S),
    }
    options: dict[str, Any] = {
        "database_url": postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix, "env": env,
    }  # fmt: skip
    a: LivemartProcess = livemart.start(**options)
    b: LivemartProcess = livemart.start(**options, args=["--no-migrate"])
    servers = (a, b)
    host = "host"
    async with httpx.AsyncClient(base_url=a.url) as http:
        created = await http.post(
            "/api/rooms",
            json={"title": "Mega sale"},
            headers={"authorization": f"Bearer {token(host, host, TEST_SECRET)}"},
        )
        room = created.json()["id"]
    channel = f"room:{room}"

    async def join(server: LivemartProcess, user: str | None) -> WsClient:
        auth = None if user is None else token(user, user, TEST_SECRET)
        client = await stack.enter_async_context(await WsClient.connect(server.ws_url, auth, timeout=30))
        await client.call("subscribe", ch=channel)
        return client

    subscribed_at = time.monotonic()
    viewers = [await join(servers[i % 2], None) for i in range(2 * VIEWERS_PER_PROCESS)]
    authors = [await join(servers[i % 2], f"author-{i}") for i in range(AUTHORS)]
    host_client = await join(a, host)
    tallies = {client: Tally() for client in [*viewers, *authors]}
    identities: dict[WsClient, str | None] = {client: None for client in viewers}
    identities.update({client: f"author-{i}" for i, client in enumerate(authors)})
    total = int(COMMENTS_PER_S * DURATION_S)
    replies = Replies(total)
    consumers = [
        asyncio.ensure_future(consume(client, identities[client], host, tally, replies))
        for client, tally in tallies.items()
    ]

    async def flood() -> Paced:
        """Comment k goes out at k / COMMENTS_PER_S from author k % AUTHORS; replies are
        collected by the authors' consumers (one loop and no task per comment, so the
        test client itself can keep this rate)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = time.monotonic()
        for k in range(total):
            delay = start + k / COMMENTS_PER_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            command = {"id": 1_000_000 + k, "op": "comment", "room": room, "text": f"comment {k}"}
            await authors[k % AUTHORS].send_raw(json.dumps(command))
        return Paced([], first, time.monotonic())

    async def host_run() -> Paced:
        count = int(HOST_COMMENTS_PER_S * DURATION_S)
        return await paced(
            count, HOST_COMMENTS_PER_S, lambda i: host_client.call("comment", room=room, text=f"host {i}")
        )

    async with httpx.AsyncClient(base_url=b.url, headers={"x-api-key": TEST_API_KEY}) as publisher:

        async def stock(i: int) -> int:
            body = {"channel": channel, "event": "stock", "data": {"sale_id": "s1", "remaining": 1000 - i}}
            response = await publisher.post("/api/publish", json=body)
            response.raise_for_status()
            off: int = response.json()["off"]
            return off

        started = time.monotonic()
        flood_paced, host_paced, stock_paced = await asyncio.gather(
            flood(),
            host_run(),
            paced(int(STOCK_EVENTS_PER_S * DURATION_S), STOCK_EVENTS_PER_S, stock),
        )
        await asyncio.wait_for(replies.done.wait(), 60)
        sending_s = max(tallies[author].last_reply_at for author in authors) - started

    async with httpx.AsyncClient(base_url=a.url) as http:
        ended = await http.post(
            f"/api/rooms/{room}/end", headers={"authorization": f"Bearer {token(host, host, TEST_SECRET)}"}
        )
        assert ended.status_code == 200
        metrics = [(await http.get(f"{server.url}/metrics")).text for server in servers]
    await asyncio.wait_for(asyncio.gather(*consumers), 30)

    failures = [r for run in (host_paced, stock_paced) for r in run.results if isinstance(r, BaseException)]
    assert failures == []
    assert [code for author in authors for code in tallies[author].errors] == []
    sent = total
    # Offered: the rate comments were sent at. Handled: up to the last reply, which is
    # what a loaded machine shows; a server that fell far behind would overflow its
    # bounded command queues and fail the test through closed connections.
    offered = sent / (flood_paced.last_sent - flood_paced.first_sent)
    handled = sent / sending_s
    priority = {r["off"] for r in host_paced.results} | set(stock_paced.results)

    for tally in tallies.values():
        assert tally.ended_at is not None
        window = tally.ended_at - subscribed_at
        # Every priority event reached every viewer; the room's end came last.
        assert priority <= tally.priority_offsets
        assert len(tally.priority_offsets) == len(priority) + 1
        # Sampled comments: at most the budget per second plus the bucket's burst.
        assert tally.sampled <= BUDGET_PER_S * window + BUDGET_PER_S
        assert tally.sampled >= BUDGET_PER_S * DURATION_S / 2  # the budget is used, not starved
    for author in authors:
        # An author never misses their own comment, sampled out for others or not.
        assert tallies[author].own_offsets == tallies[author].replied_offsets
        assert len(tallies[author].replied_offsets) == total // AUTHORS

    assert all(sampled_out(text) > 0 for text in metrics)
    low, high = min(t.sampled for t in tallies.values()), max(t.sampled for t in tallies.values())
    print(
        f"\nbudget: {sent} comments offered at {offered:.0f}/s, handled at {handled:.0f}/s; "
        f"each viewer got {low}..{high} of them, all {len(priority) + 1} priority events"
    )
    assert offered >= 0.9 * COMMENTS_PER_S
