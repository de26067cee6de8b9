"""Group chats across several real processes over one Redis and one PostgreSQL.

The issue's must-show cases: 4,000 messages from 20 concurrent senders reach 50
members on 3 processes in one order with seqs 1..4,000; a process killed mid-send
loses nothing it acknowledged; a database outage fails sends with `unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from rooms.groups.tables import messages
from tests.processes import ProcessGroup
from tests.services import run_sql
from tests.test_groups_ws import Api, bearer, connect, start
from tests.wsclient import Push, WsClient, WsClosed, WsError

pytestmark = pytest.mark.slow


async def stored(postgres_url: str, gid: int) -> list[tuple[int, str, str | None]]:
    """(seq, text, client_msg_id) of every stored message of the group, in seq order."""
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.select(messages.c.seq, messages.c.text, messages.c.client_msg_id)
                .where(messages.c.group_id == gid)
                .order_by(messages.c.seq)
            )
            return [(int(r.seq), r.text, r.client_msg_id) for r in result]
    finally:
        await engine.dispose()


async def collect_messages(client: WsClient, count: int, timeout: float) -> list[Push]:
    """The next ``count`` message pushes (other events are skipped)."""
    got: list[Push] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            push = await client.next_push(timeout=timeout)
            if push["ev"] == "message":
                got.append(push)
    return got


async def test_three_processes_deliver_4000_messages_in_one_order(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    servers = [start(livemart, postgres_url, redis_url, redis_prefix) for _ in range(3)]
    api = Api(servers[0])
    users = [f"u{i:02d}" for i in range(50)]
    gid = await api.group_with(users[0], users[1:])
    clients = [await connect(servers[i % 3], user) for i, user in enumerate(users)]
    try:
        for client in clients:
            assert (await client.call("subscribe", ch=f"group:{gid}"))["off"] == 0
        acks: dict[str, int] = {}

        async def sender(index: int) -> None:
            client = clients[index]
            for i in range(200):
                cid = f"{users[index]}-{i}"
                reply = await client.call("group.send", group=gid, text=cid, client_msg_id=cid)
                acks[cid] = reply["seq"]

        await asyncio.gather(*(sender(i) for i in range(20)))
        assert sorted(acks.values()) == list(range(1, 4001))
        received = await asyncio.gather(*(collect_messages(c, 4000, timeout=90) for c in clients))
        reference = [(p["off"], p["data"]["text"]) for p in received[0]]
        assert [off for off, _ in reference] == list(range(1, 4001))
        for member, pushes in zip(users, received, strict=True):
            assert [(p["off"], p["data"]["text"]) for p in pushes] == reference, member
        rows = await stored(postgres_url, gid)
        assert [(seq, text) for seq, text, _ in rows] == reference
        assert {cid: seq for seq, _, cid in rows if cid is not None} == acks
    finally:
        for client in clients:
            await client.close()
        await api.close()


async def test_killed_process_loses_no_acknowledged_message(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    doomed = start(livemart, postgres_url, redis_url, redis_prefix)
    survivor = start(livemart, postgres_url, redis_url, redis_prefix)
    api = Api(survivor)
    senders = [f"s{i}" for i in range(10)]
    gid = await api.group_with("owner", senders)
    clients = [await connect(doomed, user) for user in senders]
    epoch = ""
    for client in clients:
        epoch = (await client.call("subscribe", ch=f"group:{gid}"))["epoch"]
    acks: dict[str, int] = {}
    attempted: list[tuple[str, str]] = []
    enough = asyncio.Event()

    async def sender(user: str, client: WsClient) -> None:
        with contextlib.suppress(WsClosed, WsError, TimeoutError):
            for i in range(40):
                cid = f"{user}-{i}"
                attempted.append((user, cid))
                acks[cid] = (await client.call("group.send", group=gid, text=cid, client_msg_id=cid))["seq"]
                if len(acks) >= 120:
                    enough.set()

    tasks = [asyncio.create_task(sender(u, c)) for u, c in zip(senders, clients, strict=True)]
    await asyncio.wait_for(enough.wait(), timeout=60)
    doomed.kill()
    await asyncio.gather(*tasks)
    assert len(acks) >= 120 and len(attempted) > len(acks) - 1

    # Every acknowledged message is stored with the seq its sender was given.
    rows = await stored(postgres_url, gid)
    by_client_id = {cid: seq for seq, _, cid in rows}
    assert all(by_client_id.get(cid) == seq for cid, seq in acks.items())

    # Senders reconnect to the survivor and catch up on everything after what they saw.
    for user, client in zip(senders, clients, strict=True):
        seen = sorted(p["off"] for p in _drain(client) if p.get("ev") == "message")
        contiguous = 0
        for off in seen:
            if off != contiguous + 1:
                break
            contiguous = off
        again = await connect(survivor, user)
        try:
            reply = await again.call(
                "subscribe", ch=f"group:{gid}", since={"off": contiguous, "epoch": epoch}
            )
            assert reply["recovered"] is True
            delivered = set(seen) | {p["off"] for p in reply["missed"]}
            assert set(acks.values()) <= delivered
            assert delivered == set(range(1, len(rows) + 1))
        finally:
            await again.close()

    # Retrying every attempt (acknowledged or not) duplicates nothing.
    for user, cid in attempted:
        reply = await api.ok("POST", f"/api/groups/{gid}/messages", user, {"text": cid, "client_msg_id": cid})
        if cid in acks:
            assert reply["seq"] == acks[cid]
    rows = await stored(postgres_url, gid)
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert sorted(cid for _, _, cid in rows if cid is not None) == sorted(cid for _, cid in attempted)
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
    await api.close()


def _drain(client: WsClient) -> list[Push]:
    pushes: list[Push] = []
    while not client.pushes.empty():
        pushes.append(client.pushes.get_nowait())
    return pushes


async def test_database_outage_fails_sends_and_loses_nothing_acknowledged(
    livemart: ProcessGroup,
    postgres_url: str,
    postgres_admin_url: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    server = start(livemart, postgres_url, redis_url, redis_prefix)
    api = Api(server)
    gid = await api.group_with("owner", ["ann"])
    client = await connect(server, "ann")
    name = make_url(postgres_url).database
    acks: dict[str, int] = {}

    async def send(cid: str) -> dict[str, Any]:
        reply = await client.call("group.send", group=gid, text=cid, client_msg_id=cid)
        acks[cid] = reply["seq"]
        return reply

    try:
        for i in range(20):
            await send(f"before-{i}")
        run_sql(postgres_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        run_sql(
            postgres_admin_url,
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        try:
            for i in range(5):
                started = time.monotonic()
                with pytest.raises(WsError) as info:
                    await send(f"during-{i}")
                assert info.value.code == "unavailable"
                assert time.monotonic() - started < 5
            response = await api.http.post(
                f"/api/groups/{gid}/messages",
                json={"text": "x", "client_msg_id": "during-http"},
                headers=bearer("ann"),
            )
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        finally:
            run_sql(postgres_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 10
        while True:  # the first sends after the outage may still meet a dead connection
            try:
                await send("after-0")
                break
            except WsError as exc:
                assert exc.code == "unavailable" and time.monotonic() < deadline
                await asyncio.sleep(0.2)
        for i in range(5):
            await send(f"during-{i}")  # the client retries what failed
        rows = await stored(postgres_url, gid)
        assert {cid: seq for seq, _, cid in rows} == acks
        assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    finally:
        await client.close()
        await api.close()
