"""A client that stops reading is cut off; a thousand others keep their latency."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from tests.processes import TEST_SECRET, ProcessGroup, token
from tests.wsclient import WsClient

VIEWERS = 1000
MAIN_RATE_HZ = 10
DURATION_S = 4.0


def stalled_subscriber(port: int, channels: list[str]) -> socket.socket:
    """Open a WebSocket by hand, subscribe, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = sock.recv(4096)
    if not response.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"handshake failed: {response[:200]!r}")
    for i, channel in enumerate(channels, start=1):
        command = orjson.dumps({"id": i, "op": "subscribe", "ch": channel})
        sock.sendall(Frame(Opcode.TEXT, command).serialize(mask=True, extensions=[]))
    return sock


async def viewer(url: str, ready: asyncio.Event, latencies: list[float], counts: list[int]) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send('{"id": 1, "op": "subscribe", "ch": "public:main"}')
        await ws.recv()
        ready.set()
        received = 0
        async for frame in ws:
            now = time.time()
            value = orjson.loads(frame)
            for push in value if isinstance(value, list) else [value]:
                if push.get("ev") == "end":
                    counts.append(received)
                    return
                latencies.append(now - push["data"]["t"])
                received += 1


@pytest.mark.slow
async def test_slow_reader_is_cut_while_others_keep_latency(livemart: ProcessGroup) -> None:
    unlimited = {"LIVEMART_COMMAND_RATE": "1000000", "LIVEMART_COMMAND_BURST": "1000000"}
    server = livemart.start(module="tests.coreapp", env=unlimited)
    stalled = stalled_subscriber(server.port, ["public:big", "public:main"])
    latencies: list[float] = []
    counts: list[int] = []
    readies = [asyncio.Event() for _ in range(VIEWERS)]
    tasks = [asyncio.create_task(viewer(server.ws_url, r, latencies, counts)) for r in readies]
    async with asyncio.timeout(60):
        for ready in readies:
            await ready.wait()

    publisher = await WsClient.connect(server.ws_url, token=token("p", "P", TEST_SECRET), timeout=30)
    blob = "x" * 60_000  # under the 64 KiB inbound frame limit
    ticks = int(DURATION_S * MAIN_RATE_HZ)
    for _ in range(ticks):
        started = time.monotonic()
        await asyncio.gather(
            publisher.call("publish", ch="public:main", ev="n", data={"t": time.time()}),
            *(publisher.call("publish", ch="public:big", ev="blob", data={"b": blob}) for _ in range(5)),
        )
        await asyncio.sleep(max(0.0, 1 / MAIN_RATE_HZ - (time.monotonic() - started)))
    await publisher.call("publish", ch="public:main", ev="end", data={})
    async with asyncio.timeout(60):
        await asyncio.gather(*tasks)
    await publisher.close()

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{server.url}/metrics")).text
    stalled.close()
    assert "livemart_slow_disconnects_total 1.0" in metrics
    assert 'livemart_closes_total{code="4008"} 1.0' in metrics
    assert counts == [ticks] * VIEWERS, "every other viewer got every message"
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < 0.25, f"p99 {p99 * 1000:.0f} ms"
