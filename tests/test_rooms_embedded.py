"""The embedded mode (no Redis, SQLite) as a real process: the same room behaviour,
with likes, audience and moderation surviving a restart through SQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import WsClient, WsError

pytestmark = pytest.mark.slow

#: Persist embedded totals every half second so a kill -9 loses at most that much.
ENV = {"LIVEMART_PERSIST_INTERVAL_S": "0.5"}


def bearer(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user, user, TEST_SECRET)}"}


async def room_record(server: LivemartProcess, room: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(f"/api/rooms/{room}")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def test_embedded_rooms_recover_and_keep_their_totals_across_restarts(livemart: ProcessGroup) -> None:
    server = livemart.start(env=ENV)
    async with httpx.AsyncClient(base_url=server.url) as http:
        room = (await http.post("/api/rooms", json={"title": "Solo"}, headers=bearer("host"))).json()["id"]

    viewer = await WsClient.connect(server.ws_url, token("vic", "Vic", TEST_SECRET))
    joined = await viewer.call("subscribe", ch=f"room:{room}")
    await viewer.close()
    watcher = await WsClient.connect(server.ws_url)
    await watcher.call("subscribe", ch=f"room:{room}")
    async with await WsClient.connect(server.ws_url, token("ann", "Ann", TEST_SECRET)) as ann:
        offsets = [(await ann.call("comment", room=room, text=f"c{i}"))["off"] for i in range(3)]
        await asyncio.gather(*(ann.call("like", room=room, count=10) for _ in range(4)))
        await watcher.pushes_until(lambda p: p["ev"] == "likes" and p["data"]["total"] == 40)
        await watcher.close()
        async with await WsClient.connect(server.ws_url, token("host", "Host", TEST_SECRET)) as host:
            await host.call("moderate", room=room, user_id="troll", action="ban")
        # Recovery works the same without Redis: the ring buffer has what was missed.
        async with await WsClient.connect(server.ws_url) as back:
            since = {"off": joined["off"], "epoch": joined["epoch"]}
            reply = await back.call("subscribe", ch=f"room:{room}", since=since)
            assert reply["recovered"] is True
            assert [p["off"] for p in reply["missed"]] == offsets

    await asyncio.sleep(1.5)  # past a persist interval
    server.kill()  # a crash: only what was persisted survives
    # This time nothing is persisted on a timer: only the graceful stop can save likes.
    server = livemart.start(env={"LIVEMART_PERSIST_INTERVAL_S": "600"}, args=["--no-migrate"])
    record = await room_record(server, room)
    assert record["likes"] == 40

    async with await WsClient.connect(server.ws_url, token("troll", "Troll", TEST_SECRET)) as troll:
        with pytest.raises(WsError) as caught:
            await troll.call("subscribe", ch=f"room:{room}")
        assert caught.value.code == "banned"
    async with await WsClient.connect(server.ws_url) as late:
        since = {"off": joined["off"], "epoch": joined["epoch"]}
        reply = await late.call("subscribe", ch=f"room:{room}", since=since)
        assert reply["recovered"] is False  # a new process, a new epoch: resync, never a guess
        assert reply["state"]["likes"] == 40

    # A graceful stop flushes everything, however recent.
    async with await WsClient.connect(server.ws_url, token("ann", "Ann", TEST_SECRET)) as ann:
        await ann.call("like", room=room, count=2)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, hence -15.
    assert server.terminate() in (0, -15)
    assert "Application shutdown complete" in server.log_text()
    server = livemart.start(env=ENV, args=["--no-migrate"])
    assert (await room_record(server, room))["likes"] == 42
