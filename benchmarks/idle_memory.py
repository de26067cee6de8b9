"""Server memory per idle WebSocket connection.

Starts a server command (livemart by default; any peer's command works), opens N
WebSocket connections that each subscribe to one channel and then stay idle, and reports
the server's RSS growth per connection (psutil). The generator holds raw sockets only, so
it stays small and fast.

    python benchmarks/idle_memory.py --connections 10000
    python benchmarks/idle_memory.py --server-cmd "python peers/ws_broadcast.py --port {port}" \
        --subscribe '' --connections 10000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shlex
import socket
import subprocess
import sys
import time

import httpx
import psutil
from websockets.frames import Frame, Opcode

DEFAULT_CMD = f"{sys.executable} -m livemart serve --port {{port}} --no-migrate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def open_idle(port: int, subscribe: bytes | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:100].decode(errors="replace"))
    if subscribe:
        writer.write(Frame(Opcode.TEXT, subscribe).serialize(mask=True, extensions=[]))
        await reader.read(65536)  # the subscribe reply
    return reader, writer


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--server-cmd", default=DEFAULT_CMD, help="{port} is replaced")
    parser.add_argument("--cpu", default="0", help="core to pin the server to (taskset)")
    parser.add_argument(
        "--subscribe",
        default='{"id": 1, "op": "subscribe", "ch": "room:%s"}',
        help="first frame each connection sends ('' for none); %%s is a room id",
    )
    parser.add_argument("--room", default="", help="room id for --subscribe (created if empty)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    command = ["taskset", "-c", args.cpu, *shlex.split(args.server_cmd.format(port=port))]
    server = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            room = args.room
            if args.subscribe and "%s" in args.subscribe and not room:
                token = os.environ.get("LIVEMART_TOKEN", "")
                reply = await http.post(
                    f"{base}/api/rooms", json={"title": "idle"}, headers={"Authorization": f"Bearer {token}"}
                )
                room = str(reply.json()["id"])
        pid = server.pid
        # taskset execs the server, so the pid is the server's own.
        await asyncio.sleep(1.0)
        before = rss(pid)
        subscribe = (args.subscribe % room).encode() if args.subscribe else None
        conns = []
        started = time.monotonic()
        for start in range(0, args.connections, 500):
            batch = min(500, args.connections - start)
            conns += await asyncio.gather(*(open_idle(port, subscribe) for _ in range(batch)))
        connect_s = time.monotonic() - started
        await asyncio.sleep(2.0)
        after = rss(pid)
        print(
            json.dumps(
                {
                    "connections": len(conns),
                    "rss_before_mib": round(before / 2**20, 1),
                    "rss_after_mib": round(after / 2**20, 1),
                    "rss_per_connection_kib": round((after - before) / len(conns) / 1024, 2),
                    "connect_per_s": round(len(conns) / connect_s),
                    "command": " ".join(command),
                }
            )
        )
        for _, writer in conns:
            writer.close()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 20)


if __name__ == "__main__":
    asyncio.run(main())
