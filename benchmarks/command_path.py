"""What one WebSocket command costs the server in Python, without the system calls.

Builds the whole app in-process (embedded: SQLite in a temporary directory, the
in-process broker and ledger), opens C gateway connections on in-memory transports,
then feeds masked command frames to ``Connection.data_received`` — the same entry a
socket read reaches — and runs the loop until every reply is written. The time per
command is everything the server does in Python for it: frame parsing, decoding,
dispatch, the handler, encoding and the write call, but not ``recv``/``send`` or epoll.

    taskset -c 1 python benchmarks/command_path.py --op reserve --commands 100000
    python benchmarks/command_path.py --op ping --profile /tmp/ping.prof

``reserve`` targets a sold-out sale (the flash-sale rush after the first second);
``ping`` is the transport alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import uvloop
from websockets.speedups import apply_mask

from commerce.inputs import ProductDraft, SaleDraft
from livemart.app import assemble
from realtime.config import Settings
from realtime.gateway import Connection
from realtime.server import Core

SECRET = "command-path-benchmark-secret-0123456789abcdef"


class Writes:
    """Frames written over every transport; ``done`` is set once ``target`` is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self.done = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


class MemoryTransport:
    """A transport that keeps nothing: the server's writes are only counted."""

    def __init__(self, writes: Writes) -> None:
        self.writes = writes
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.add()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a browser sends it."""
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return header + mask + apply_mask(payload, mask)


def handshake(token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: livemart.json\r\n\r\n"
    ).encode()


async def sold_out_sale(core: Core, assembly: Any) -> str:
    shop = next(m for m in assembly.modules if type(m).__name__ == "Commerce")
    product = await shop.desk.create_product("merchant", ProductDraft("Tea", 100, "EUR", None))
    draft = SaleDraft(product.id, 1, None, 1, 600, None, None, None, None)
    sale_id: str = (await shop.desk.create_sale("merchant", draft))["id"]
    return sale_id


async def run(op: str, commands: int, connections: int, profile: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            secret=SECRET,
            command_rate_per_s=1e9,
            command_burst=10**9,
        )
        assembly = assemble(settings)
        core = assembly.core
        await core.migrate(assembly.modules)
        async with assembly.app.router.lifespan_context(assembly.app):
            sale_id = await sold_out_sale(core, assembly)
            server_state = SimpleNamespace(connections=set())
            writes = Writes()
            clients = []
            for index in range(connections):
                conn = Connection(core.gateway, server_state)
                conn.connection_made(MemoryTransport(writes))  # type: ignore[arg-type]
                token = core.tokens.issue(f"u{index}", name=f"User {index}", ttl_s=3600)
                conn.data_received(handshake(token))
                clients.append(conn)

            def command(index: int, number: int) -> bytes:
                if op == "ping":
                    body: dict[str, Any] = {"id": number, "op": "ping"}
                else:
                    body = {"id": number, "op": "reserve", "sale": sale_id, "key": f"k{index}-{number}"}
                return client_frame(orjson.dumps(body))

            # The first buyer takes the only unit; the ledger then says sold out.
            for number in range(1, 4):
                for index, conn in enumerate(clients):
                    conn.data_received(command(index, number))
                await asyncio.sleep(0.05)
            frames = [command(i % connections, 10 + i // connections) for i in range(commands)]
            writes.target = writes.count + commands
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            started = time.perf_counter()
            cpu_started = time.process_time()
            for i, frame in enumerate(frames):
                clients[i % connections].data_received(frame)
                if i % connections == connections - 1:
                    await asyncio.sleep(0)  # let workers run, as between socket reads
            await writes.done.wait()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            if profiler:
                profiler.disable()
                profiler.dump_stats(profile)
            for conn in clients:
                conn.connection_lost(None)
    return {
        "benchmark": "command_path",
        "op": op,
        "commands": commands,
        "connections": connections,
        "per_command_us": round(elapsed / commands * 1e6, 2),
        "cpu_per_command_us": round(cpu / commands * 1e6, 2),
        "commands_per_s": round(commands / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=["ping", "reserve"], default="reserve")
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--profile", help="write cProfile stats here")
    args = parser.parse_args()
    result = uvloop.run(run(args.op, args.commands, args.connections, args.profile))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
