"""The WebSocket gateway against a real process: identity, bad input, recovery.

Every abuse case ends by checking that a bystander connection is still served.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from realtime.config import ConfigError, Settings
from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import MSGPACK, WsClient, WsClosed, WsError


@pytest.fixture
def server(livemart: ProcessGroup) -> LivemartProcess:
    return livemart.start(module="tests.coreapp")


@pytest.fixture
async def bystander(server: LivemartProcess) -> AsyncIterator[WsClient]:
    client = await WsClient.connect(server.ws_url, token=token("by", "By", TEST_SECRET))
    await client.call("subscribe", ch="public:bystander")
    yield client
    await client.close()


async def assert_still_served(server: LivemartProcess, bystander: WsClient) -> None:
    """The process still answers, and still fans out to others."""
    assert "t" in await bystander.call("ping")
    async with await WsClient.connect(server.ws_url, token=token("p", "P", TEST_SECRET)) as pub:
        await pub.call("publish", ch="public:bystander", ev="hello", data={"n": 1})
    push = await bystander.next_push(timeout=5)
    assert (push["ev"], push["data"]) == ("hello", {"n": 1})


async def test_guest_may_watch_but_not_act(server: LivemartProcess, bystander: WsClient) -> None:
    async with await WsClient.connect(server.ws_url) as guest:
        reply = await guest.call("subscribe", ch="public:bystander")
        assert reply["recovered"] is False and reply["state"] == {"channel": "bystander"}
        with pytest.raises(WsError) as info:
            await guest.call("publish", ch="public:bystander", ev="x")
        assert info.value.code == "unauthorized"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "x" * 64, algorithm="HS256"),
            "invalid",
        ),
        (lambda: token("u", "U", TEST_SECRET, ttl=-10), "expired"),
        (lambda: "garbage", "invalid"),
    ],
    ids=["forged", "expired", "garbage"],
)
async def test_bad_tokens_close_with_unauthorized(
    server: LivemartProcess, bystander: WsClient, make: object, reason: str
) -> None:
    client = await WsClient.connect(server.ws_url, token=make())  # type: ignore[operator]
    with pytest.raises(WsClosed) as info:
        await client.call("ping")
    assert info.value.code == 4001
    assert "unauthorized" in info.value.reason and reason in info.value.reason
    await assert_still_served(server, bystander)


async def test_malformed_frames_get_error_replies(server: LivemartProcess, bystander: WsClient) -> None:
    async with await WsClient.connect(server.ws_url, token=token("m", "M", TEST_SECRET)) as client:
        for frame in ['{"id": 1, "op":', "[1,2]", '{"op": "ping"}', "42"]:
            await client.send_raw(frame)
            reply = await client.next_push(timeout=5)
            assert reply["id"] == 0 and reply["error"]["code"] == "bad_request", frame
        with pytest.raises(WsError) as info:
            await client.call("no_such_op")
        assert info.value.code == "bad_request" and "unknown op" in info.value.message
        with pytest.raises(WsError) as info:
            await client.call("subscribe", ch="nowhere:1")
        assert info.value.code == "bad_request"
        with pytest.raises(WsError) as info:
            await client.call("subscribe")
        assert info.value.code == "bad_request"
        assert "t" in await client.call("ping")  # the connection survived all of it
    await assert_still_served(server, bystander)


async def test_invalid_msgpack_gets_error_reply(server: LivemartProcess, bystander: WsClient) -> None:
    async with await WsClient.connect(server.ws_url, protocol=MSGPACK) as client:
        await client.send_raw(b"\xc1\xff\x00")
        reply = await client.next_push(timeout=5)
        assert reply["error"]["code"] == "bad_request"
        assert "t" in await client.call("ping")
    await assert_still_served(server, bystander)


async def test_oversized_frame_closes_1009(server: LivemartProcess, bystander: WsClient) -> None:
    client = await WsClient.connect(server.ws_url)
    await client.send_raw('{"id": 1, "op": "ping", "pad": "' + "x" * 70_000 + '"}')
    with pytest.raises(WsClosed) as info:
        await client.call("ping")
    assert info.value.code == 1009
    await assert_still_served(server, bystander)


async def test_invalid_utf8_text_closes_1007(server: LivemartProcess, bystander: WsClient) -> None:
    client = await WsClient.connect(server.ws_url)
    await client.ws.send(b'{"id": 1, "op": "\xff"}', text=True)
    with pytest.raises(WsClosed) as info:
        await client.call("ping")
    assert info.value.code == 1007
    await assert_still_served(server, bystander)


async def test_command_flood_is_rate_limited(server: LivemartProcess, bystander: WsClient) -> None:
    async with await WsClient.connect(server.ws_url) as client:
        results = await asyncio.gather(*(client.call("ping") for _ in range(400)), return_exceptions=True)
        ok = [r for r in results if isinstance(r, dict)]
        limited = [r for r in results if isinstance(r, WsError) and r.code == "rate_limited"]
        assert len(ok) + len(limited) == 400
        assert 100 <= len(ok) < 400 and limited
    await assert_still_served(server, bystander)


async def test_unknown_path_and_unknown_subprotocol_are_refused(server: LivemartProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.ws_url.replace("/ws", "/other")):
            pass
    assert info.value.response.status_code == 404
    async with connect(server.ws_url, subprotocols=["livemart.json"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "livemart.json"
    async with connect(server.ws_url) as ws:
        assert ws.subprotocol is None  # no subprotocol asked: JSON by default
        await ws.send('{"id": 5, "op": "ping"}')
        assert '"id":5' in str(await ws.recv())


async def test_recovery_returns_exactly_the_missed_pushes(server: LivemartProcess) -> None:
    author = token("a", "A", TEST_SECRET)
    async with await WsClient.connect(server.ws_url) as viewer:
        first = await viewer.call("subscribe", ch="public:r")
    async with await WsClient.connect(server.ws_url, token=author) as pub:
        for i in range(30):
            await pub.call("publish", ch="public:r", ev="comment", data={"i": i})
    async with await WsClient.connect(server.ws_url) as viewer:
        again = await viewer.call(
            "subscribe", ch="public:r", since={"off": first["off"], "epoch": first["epoch"]}
        )
        assert again["recovered"] is True
        assert [p["data"]["i"] for p in again["missed"]] == list(range(30))
        assert [p["off"] for p in again["missed"]] == list(range(first["off"] + 1, first["off"] + 31))
    async with await WsClient.connect(server.ws_url) as viewer:
        stale = await viewer.call("subscribe", ch="public:r", since={"off": first["off"], "epoch": "other"})
        assert stale["recovered"] is False and stale["missed"] == [] and stale["state"]


async def test_publish_api_needs_the_key(server: LivemartProcess, bystander: WsClient) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        body = {"channel": "public:bystander", "event": "news", "data": {"x": 1}}
        assert (await http.post("/api/publish", json=body)).status_code == 401
        wrong = await http.post("/api/publish", json=body, headers={"X-API-Key": "nope"})
        assert wrong.json()["error"]["code"] == "unauthorized"
        ok = await http.post("/api/publish", json=body, headers={"X-API-Key": "livemart-test-api-key"})
        assert ok.status_code == 200 and ok.json()["off"] >= 1
        bad = await http.post(
            "/api/publish",
            json={"channel": "x:1", "event": "e"},
            headers={"X-API-Key": "livemart-test-api-key"},
        )
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
        big = await http.post(
            "/api/publish",
            content=b"{" + b" " * 70_000 + b"}",
            headers={"X-API-Key": "livemart-test-api-key"},
        )
        assert big.status_code == 413
    push = await bystander.next_push(timeout=5)
    assert (push["ev"], push["data"]) == ("news", {"x": 1})


async def test_health_readiness_and_metrics(server: LivemartProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "pid": server.pid}
        ready = (await http.get("/readyz")).json()
        assert ready["ready"] is True and ready["checks"] == {"database": "ok", "broker": "ok"}
        async with await WsClient.connect(server.ws_url) as client:
            await client.call("ping")
            text = (await http.get("/metrics")).text
        assert "livemart_connections 1.0" in text
        assert 'livemart_command_seconds_count{op="ping"}' in text
        missing = await http.get("/api/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_wrong_frame_type_closes_1003(server: LivemartProcess, bystander: WsClient) -> None:
    client = await WsClient.connect(server.ws_url)
    await client.ws.send(b'{"id": 1, "op": "ping"}')  # binary frame on livemart.json
    with pytest.raises(WsClosed) as info:
        await client.call("ping")
    assert info.value.code == 1003
    await assert_still_served(server, bystander)


async def test_command_queue_overflow_closes_1008(livemart: ProcessGroup) -> None:
    unlimited = {"LIVEMART_COMMAND_RATE": "1000000", "LIVEMART_COMMAND_BURST": "1000000"}
    server = livemart.start(module="tests.coreapp", env=unlimited)
    client = await WsClient.connect(server.ws_url, token=token("f", "F", TEST_SECRET))
    # Commands run one at a time; 1,000 slow ones overflow the 256-command queue.
    for i in range(1, 1001):
        await client.send_raw(f'{{"id": {i}, "op": "sleep", "ms": 50}}')
    with pytest.raises(WsClosed) as info:
        while True:
            await client.next_push(timeout=10)
    assert info.value.code == 1008
    async with await WsClient.connect(server.ws_url) as other:
        assert "t" in await other.call("ping")


async def test_replies_keep_command_order_when_some_answer_at_once(server: LivemartProcess) -> None:
    """`ping` and an unknown op are answered without a task; they must still wait for an
    earlier command that is waiting for I/O, and answer at once when nothing is queued."""
    url = f"{server.ws_url}?token={token('o', 'O', TEST_SECRET)}"
    async with connect(url, subprotocols=[Subprotocol("livemart.json")]) as ws:
        await ws.send('{"id": 1, "op": "sleep", "ms": 300}')
        await ws.send('{"id": 2, "op": "ping"}')
        await ws.send('{"id": 3, "op": "no-such-op"}')
        await ws.send('{"id": 4, "op": "ping"}')
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
        assert [r["id"] for r in replies] == [1, 2, 3, 4]
        assert replies[0]["ok"] == {} and "t" in replies[1]["ok"] and "t" in replies[3]["ok"]
        assert replies[2]["error"]["code"] == "bad_request"
        started = time.monotonic()
        await ws.send('{"id": 5, "op": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == 5
        assert time.monotonic() - started < 1.0


async def test_subscribe_again_after_unsubscribe(server: LivemartProcess) -> None:
    async with await WsClient.connect(server.ws_url, token=token("s", "S", TEST_SECRET)) as client:
        await client.call("subscribe", ch="public:again")
        await client.call("unsubscribe", ch="public:again")
        await client.call("publish", ch="public:again", ev="missed", data={})
        again = await client.call("subscribe", ch="public:again")
        assert again["off"] >= 1
        await client.call("publish", ch="public:again", ev="seen", data={})
        assert (await client.next_push(timeout=5))["ev"] == "seen"


async def test_origin_cors_and_connection_limits(livemart: ProcessGroup) -> None:
    env = {
        "LIVEMART_ALLOWED_ORIGINS": "https://shop.example",
        "LIVEMART_MAX_CONNECTIONS_PER_IP": "4",
        "LIVEMART_MAX_CONNECTIONS_PER_USER": "2",
    }
    server = livemart.start(module="tests.coreapp", env=env)
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.ws_url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    async with connect(server.ws_url, origin="https://shop.example") as ws:  # type: ignore[arg-type]
        await ws.send('{"id": 1, "op": "ping"}')
        assert '"ok"' in str(await ws.recv())

    async with httpx.AsyncClient(base_url=server.url) as http:
        allowed = await http.options(
            "/api/publish",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = await http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers

    same_user = token("u", "U", TEST_SECRET)
    first = await WsClient.connect(server.ws_url, token=same_user)
    second = await WsClient.connect(server.ws_url, token=same_user)
    third = await WsClient.connect(server.ws_url, token=same_user)
    with pytest.raises(WsClosed) as closed:
        await third.call("ping")
    assert closed.value.code == 1008 and "user" in closed.value.reason
    guests = [await WsClient.connect(server.ws_url) for _ in range(2)]
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.ws_url):
            pass
    assert info.value.response.status_code == 429
    for client in [first, second, *guests]:
        assert "t" in await client.call("ping")
        await client.close()


async def test_silent_connections_are_pinged_then_closed(livemart: ProcessGroup) -> None:
    env = {"LIVEMART_PING_INTERVAL_S": "0.5", "LIVEMART_IDLE_TIMEOUT_S": "1.5"}
    server = livemart.start(module="tests.coreapp", env=env)
    answering = await WsClient.connect(server.ws_url)  # websockets answers pings itself
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    async with asyncio.timeout(10):
        rest = await reader.read()  # pings arrive, go unanswered, then the server hangs up
    writer.close()
    assert b"\x88" in rest and (4002).to_bytes(2, "big") in rest  # a close frame with 4002
    assert "t" in await answering.call("ping"), "a client that answers pings stays"
    await answering.close()


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ConfigError, match="LIVEMART_SECRET"):
        Settings.from_env({"LIVEMART_SECRET": "too-short"})
    assert Settings.from_env({"LIVEMART_SECRET": "x" * 32}).secret == "x" * 32
