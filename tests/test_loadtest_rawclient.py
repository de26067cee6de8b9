"""The raw listening connection over real sockets: setup messages, then exact byte counting."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.typing import Subprotocol

from loadtest import markers
from loadtest.counting import MarkerCounter
from loadtest.rawclient import HandshakeFailed, RawConnection, keep_alive, trailing_close_code

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: Opcode = Opcode.TEXT) -> bytes:
    return Frame(opcode, payload).serialize(mask=False, extensions=[])


def _batch(first: int, count: int) -> bytes:
    pushes = [
        {"ch": "room:1", "ev": "comment", "data": {"text": markers.make("comment", first + i)}}
        for i in range(count)
    ]
    return _frame(orjson.dumps(pushes))


async def _trickle_server(stream: bytes, chunk: int) -> tuple[asyncio.Server, int]:
    """Accepts one upgrade, answers one setup message, then writes `stream` `chunk` bytes at a time."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + b"Sec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
        )
        await reader.read(1024)  # the client's setup message
        writer.write(_frame(b'{"id":1,"ok":{}}'))
        await writer.drain()
        await asyncio.sleep(0.05)
        for start in range(0, len(stream), chunk):
            writer.write(stream[start : start + chunk])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(_frame(Close(4008, "slow").serialize(), Opcode.CLOSE))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(b"echo:" + (message if isinstance(message, bytes) else message.encode()), text=True)

    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[Subprotocol("livemart.json")], ping_interval=None
    ) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def test_setup_messages_go_through_the_parser(echo_port: int) -> None:
    url = f"ws://127.0.0.1:{echo_port}/ws"
    conn = await RawConnection.open("127.0.0.1", echo_port, url, ["livemart.json"], timeout_s=5)
    assert conn.subprotocol == "livemart.json"
    conn.send(b"hello", text=True)
    assert await asyncio.wait_for(conn.recv(), 5) == b"echo:hello"
    conn.close()
    await asyncio.wait_for(conn.closed, 5)


async def test_a_refused_upgrade_raises_with_the_status() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    def refuse(ws: ServerConnection, request: object) -> object:
        return ws.respond(403, "no\n")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:  # type: ignore[arg-type]
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(HandshakeFailed) as failure:
            await RawConnection.open("127.0.0.1", port, f"ws://127.0.0.1:{port}/ws", timeout_s=5)
    assert failure.value.status == 403


@pytest.mark.parametrize("chunk", [1, 7, 4096])
async def test_counting_is_exact_however_tcp_splits_the_stream(chunk: int) -> None:
    stream = b"".join(_batch(1_000 + 100 * i, 20) for i in range(10)) + _frame(
        b'{"ch":"room:1","ev":"viewers"}'
    )
    server, port = await _trickle_server(stream, chunk)
    counted: list[int] = []
    sampled: list[tuple[str, int]] = []
    async with server:
        conn = await RawConnection.open("127.0.0.1", port, f"ws://127.0.0.1:{port}/ws", timeout_s=5)
        conn.send(b'{"id":1,"op":"subscribe","ch":"room:1"}', text=True)
        assert await asyncio.wait_for(conn.recv(), 5) == b'{"id":1,"ok":{}}'

        def on_count(_conn: RawConnection, found: int, samples: list[tuple[str, int]]) -> None:
            counted.append(found)
            sampled.extend(samples)

        conn.count(MarkerCounter(every=7), on_count)
        await asyncio.wait_for(conn.closed, 10)
    assert sum(counted) == 200
    expected = [1_000 + 100 * (i // 20) + i % 20 for i in range(200)]
    assert [us for _, us in sampled] == expected[::7]
    assert conn.close_code == 4008  # read from the close frame that ended the stream


def test_trailing_close_code() -> None:
    close = _frame(Close(3008, "slow consumer").serialize(), Opcode.CLOSE)
    assert trailing_close_code(_batch(1, 3) + close) == 3008
    assert trailing_close_code(_batch(1, 3)) == 1006
    assert trailing_close_code(b"") == 1006


async def test_listening_connections_ping_so_servers_keep_them() -> None:
    """A counting connection never answers the server, so keep_alive pings on its behalf."""
    received = bytearray()
    got_ping = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + b"Sec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
        )
        while b"\x89\x80" not in received:  # FIN + ping opcode, masked, empty payload
            data = await reader.read(1024)
            if not data:
                return
            received.extend(data)
        got_ping.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = await RawConnection.open("127.0.0.1", port, f"ws://127.0.0.1:{port}/ws", timeout_s=5)
        conn.count(MarkerCounter(), lambda _c, _n, _s: None)
        pinging = asyncio.create_task(keep_alive([conn], every_s=0.05))
        try:
            await asyncio.wait_for(got_ping.wait(), 5)
        finally:
            pinging.cancel()
            conn.abort()
