"""One fan-out load point against one server: N subscribers in one room, R messages/s.

The generator side of `side_by_side.py`, run as its own process on its own core. It
speaks each server's way of joining a room and publishing into it, then listens the same
way everywhere: after the join, a connection stops parsing frames and counts markers in
the raw byte stream (`loadtest.counting`), so one generator core outruns one server core.
Counts are exact; latency is read from every n-th marker (n in the output).

Publishing is open loop (message k is due at start + k / rate, whatever the replies do)
and latency runs from that due time, as in `livemart loadtest`. Server CPU is read with
psutil on the server's pid. Prints one JSON line.

With `--driver native` (livemart only) the subscribers are one `wsdrive listen` process
(benchmarks/native) on this process's core instead of Python connections: near a million
deliveries a second the Python reader saturates its core before the server does. This
process still publishes; the generator CPU is then the driver's plus the publisher's.

    python benchmarks/fanout_load.py --kind livemart --url http://127.0.0.1:8000 \
        --server-pid 1234 --subscribers 1000 --rate 50 --duration 10 [--driver native]
    python benchmarks/fanout_load.py --kind socketio --url ... --server-pid ... --idle 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
import uvloop
from native import Listener
from websockets.asyncio.client import ClientConnection, connect

from loadtest import markers
from loadtest.counting import MarkerCounter, sample_every
from loadtest.httpclient import HttpClient, HttpError
from loadtest.rawclient import RawConnection, keep_alive
from loadtest.schedule import run_open_loop
from loadtest.stats import new_histogram, now_us, record_us
from loadtest.summary import percentiles_ms
from loadtest.tokens import mint

KINDS = ("livemart", "socketio", "ws")
LANES = ("comment",)
"""Every message is a comment: one scan per read."""
ROOM = "bench"
CONNECT_CONCURRENCY = 100
OPEN_TIMEOUT_S = 20.0
JOIN_TIMEOUT_S = 20.0
JOIN_ATTEMPTS = 3
RETRY_DELAY_S = 0.2
START_DELAY_S = 0.5
QUIET_S = 1.0
"""After the last send, this long without a delivery ends the drain early."""
IDLE_SETTLE_S = 2.0
NATIVE_SAMPLES_PER_S = 50_000
"""Latency samples a second the native driver records at most (sorting them is its only cost)."""
NATIVE_LISTEN_MARGIN_S = 120.0
"""The driver listens at most this long past the send window unless told what is owed."""


class JoinRefused(Exception):
    """The server answered the join with an error; the message is its code."""


class Target:
    """How one kind of server is joined and published to."""

    sub_path = "/"
    subprotocols: tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = HttpClient(url, max_connections=64, timeout=10.0)

    async def prepare(self) -> None:
        """Create what subscribers join (a room), if the server needs that."""

    async def join(self, conn: RawConnection) -> None:
        raise NotImplementedError

    async def publish(self, data: dict[str, Any]) -> bool:
        """Send one message into the room; True when the server accepted it."""
        raise NotImplementedError

    async def close(self) -> None:
        await self.http.close()


class Livemart(Target):
    """Guests subscribe to `room:<id>` (public rooms need no token); the backend API publishes."""

    sub_path = "/ws"
    subprotocols = ("livemart.json",)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.channel = ""
        self.headers = {"X-API-Key": os.environ["LIVEMART_API_KEY"]}

    async def prepare(self) -> None:
        token = mint(os.environ["LIVEMART_SECRET"], "bench-host", "bench host", 3600)
        response = await self.http.request("POST", "/api/rooms", token=token, json={"title": "bench"})
        if not response.ok:
            raise RuntimeError(f"POST /api/rooms -> {response.status}")
        self.channel = f"room:{response.json()['id']}"

    async def join(self, conn: RawConnection) -> None:
        conn.send(orjson.dumps({"id": 1, "op": "subscribe", "ch": self.channel}), text=True)
        while True:
            message = orjson.loads(await conn.recv())
            for obj in message if isinstance(message, list) else [message]:
                if obj.get("id") == 1 and "ch" not in obj:
                    if "ok" not in obj:
                        raise JoinRefused(str(obj.get("error", {}).get("code", "unknown")))
                    return

    async def publish(self, data: dict[str, Any]) -> bool:
        body = {"channel": self.channel, "event": "comment", "data": data}
        response = await self.http.request("POST", "/api/publish", json=body, headers=self.headers)
        return bool(response.ok)


class SocketIO(Target):
    """Engine.IO v4 over a bare WebSocket: open, connect to `/`, emit `join` with an ack."""

    sub_path = "/socket.io/?EIO=4&transport=websocket"

    async def join(self, conn: RawConnection) -> None:
        await _expect(conn, b"0")  # engine.io open
        conn.send(b"40", text=True)
        await _expect(conn, b"40")  # namespace connected
        conn.send(b'420["join","' + ROOM.encode() + b'"]', text=True)
        await _expect(conn, b"430")  # the ack of join

    async def publish(self, data: dict[str, Any]) -> bool:
        body = {"room": ROOM, "event": "comment", "data": data}
        response = await self.http.request("POST", "/publish", json=body)
        return bool(response.ok)


class Broadcast(Target):
    """`/sub/<room>` to listen; one publisher connection on `/pub/<room>`."""

    sub_path = f"/sub/{ROOM}"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.publisher: ClientConnection | None = None

    async def prepare(self) -> None:
        ws_url = "ws" + self.url.removeprefix("http") + f"/pub/{ROOM}"
        self.publisher = await connect(ws_url, compression=None, ping_interval=None, proxy=None)

    async def join(self, conn: RawConnection) -> None:
        await _expect(conn, b"joined")

    async def publish(self, data: dict[str, Any]) -> bool:
        if self.publisher is None:
            return False
        await self.publisher.send(orjson.dumps({"ch": ROOM, "ev": "comment", "data": data}).decode())
        return True

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        await super().close()


TARGETS: dict[str, type[Target]] = {"livemart": Livemart, "socketio": SocketIO, "ws": Broadcast}


async def _expect(conn: RawConnection, prefix: bytes) -> None:
    """Read setup messages until one starts with `prefix` (pings and the like are skipped)."""
    while not (await conn.recv()).startswith(prefix):
        pass


class Listeners:
    """The subscribers: open and join them, then count what they receive."""

    def __init__(self, target: Target, every: int) -> None:
        self.target = target
        self.every = every
        self.conns: list[RawConnection] = []
        self.errors: dict[str, int] = {}
        self.delivered = 0
        self.last_delivery = 0.0
        self.histogram = new_histogram()
        self.stopping = False
        self.pinging: asyncio.Task[None] | None = None

    async def open(self, count: int) -> float:
        """Open and join `count` subscribers; returns the seconds it took."""
        parts = urlsplit(self.target.url)
        url = f"ws://{parts.netloc}{self.target.sub_path}"
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        began = time.monotonic()
        if self.pinging is None:
            self.pinging = asyncio.create_task(keep_alive(self.conns))

        async def one(index: int) -> None:
            for attempt in range(JOIN_ATTEMPTS):
                async with gate:
                    conn = await self.join(parts.hostname or "", parts.port or 80, url)
                if isinstance(conn, RawConnection):
                    self.keep(conn, index)
                    return
                if conn != "unavailable" or attempt == JOIN_ATTEMPTS - 1:
                    self.error(f"join_{conn}")
                    return
                # The contract's answer to `unavailable` is: retry. Count it, then do.
                self.error("join_unavailable_retried")
                await asyncio.sleep(RETRY_DELAY_S * (attempt + 1))

        await asyncio.gather(*(one(i) for i in range(count)))
        return time.monotonic() - began

    async def join(self, host: str, port: int, url: str) -> RawConnection | str:
        """A joined connection, or the code of what failed."""
        try:
            conn = await RawConnection.open(
                host, port, url, self.target.subprotocols, timeout_s=OPEN_TIMEOUT_S
            )
        except Exception as exc:
            return f"connect_{type(exc).__name__}"
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await self.target.join(conn)
        except JoinRefused as exc:
            conn.abort()
            return str(exc)
        except Exception as exc:
            conn.abort()
            return type(exc).__name__
        return conn

    def keep(self, conn: RawConnection, index: int) -> None:
        """Switch a joined connection to counting; the index staggers its latency sample."""
        conn.count(MarkerCounter(self.every, index, LANES), self.counted)
        conn.closed.add_done_callback(lambda _: self.lost(conn))
        self.conns.append(conn)

    def counted(self, conn: RawConnection, found: int, samples: list[tuple[str, int]]) -> None:
        self.delivered += found
        received = now_us()
        self.last_delivery = received / 1e6
        for _lane, sent_us in samples:
            record_us(self.histogram, received - sent_us)

    def lost(self, conn: RawConnection) -> None:
        if not self.stopping:
            self.error(f"closed_{conn.close_code or 1006}")

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    @property
    def subscribed(self) -> int:
        return len(self.conns)

    def cpu_s(self) -> float:
        """CPU of listening outside this process: none, it all happens here."""
        return 0.0

    async def drain(self, expected: int, deadline: float, sends_end: float) -> None:
        """Wait until `expected` deliveries, the deadline, or QUIET_S without a delivery."""
        while time.time() < deadline and self.delivered < expected:
            if time.time() - max(self.last_delivery, sends_end) >= QUIET_S:
                break
            await asyncio.sleep(0.05)

    def latency(self) -> tuple[dict[str, Any], dict[str, int]]:
        """Percentiles in ms, and how they were sampled."""
        sample = {"every": self.every, "samples": self.histogram.get_total_count()}
        return percentiles_ms(self.histogram), sample

    async def close(self) -> None:
        self.stopping = True
        if self.pinging is not None:
            self.pinging.cancel()
        for conn in self.conns:
            conn.close()


class NativeListeners:
    """The subscribers as one `wsdrive listen` process: same counts, a fraction of the CPU.

    Each connection subscribes as a guest, like `Livemart.join`. The driver reports once,
    at the end, so the counts are read after `drain`.
    """

    def __init__(self, target: Target, every: int, listen_s: float, drain_s: float) -> None:
        if not isinstance(target, Livemart):
            raise SystemExit("--driver native speaks livemart's protocol only")
        self.target = target
        self.every = every
        self.listen_s = listen_s
        self.drain_s = drain_s
        self.driver: Listener | None = None
        self.result: dict[str, Any] = {}
        self.errors: dict[str, int] = {}
        self.subscribed = 0

    async def open(self, count: int) -> float:
        parts = urlsplit(self.target.url)
        subscribe = '{"id":%ID%,"op":"subscribe","ch":' + json.dumps(self.target.channel) + "}"
        options = [
            "--url", f"ws://{parts.netloc}{self.target.sub_path}", "--conns", str(count),
            "--concurrency", str(CONNECT_CONCURRENCY), "--setup", subscribe,
            "--every", str(self.every), "--duration", str(self.listen_s), "--drain", str(self.drain_s),
        ]  # fmt: skip
        self.driver = Listener(options)
        began = time.monotonic()
        await self.driver.start()
        self.subscribed = self.driver.connected
        return time.monotonic() - began

    def cpu_s(self) -> float:
        if self.driver is None:
            return 0.0
        try:
            return cpu_s(psutil.Process(self.driver.pid))
        except psutil.NoSuchProcess:
            return 0.0

    async def drain(self, expected: int, deadline: float, sends_end: float) -> None:
        """The driver stops at `expected` markers or `drain_s` after being told."""
        assert self.driver is not None
        self.result = await self.driver.finish(expected)
        self.errors = self.result["errors"]

    @property
    def delivered(self) -> int:
        return int(self.result.get("delivered", 0))

    @property
    def last_delivery(self) -> float:
        return float(self.result.get("last_delivery_at", 0.0))

    def latency(self) -> tuple[dict[str, Any], dict[str, int]]:
        return self.result["latency_ms"], self.result["latency_sample"]

    async def close(self) -> None:
        if self.driver is not None:
            await self.driver.abort()


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Publisher:
    """Publishes the benchmark's messages into one target, each at its due time; counts outcomes.

    Every message carries a comment-lane latency marker stamped with its due time.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.accepted = 0
        self.failed = 0
        self._inflight: set[asyncio.Task[None]] = set()

    def fire(self, k: int, due: float) -> None:
        task = asyncio.create_task(self._send(k, due))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, k: int, due: float) -> None:
        data = {
            "id": f"m{k}",
            "user_id": "bench",
            "name": "bench",
            "text": f"{markers.make('comment', int(due * 1e6))} hello from the benchmark",
            "ts": int(due * 1000),
        }
        try:
            ok = await self.target.publish(data)
        except (HttpError, OSError):
            ok = False
        if ok:
            self.accepted += 1
        else:
            self.failed += 1

    async def wait(self, deadline: float) -> int:
        """Wait for answers until ``deadline``; returns how many publishes are still unanswered."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=max(0.1, deadline - time.time()))
        return len(self._inflight)

    async def cancel(self) -> None:
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)


async def load_point(args: argparse.Namespace, server: psutil.Process) -> dict[str, Any]:
    target = TARGETS[args.kind](args.url)
    listeners: Listeners | NativeListeners
    if args.driver == "native":
        every = math.ceil(args.subscribers * args.rate / NATIVE_SAMPLES_PER_S)
        listen_s = START_DELAY_S + args.duration + NATIVE_LISTEN_MARGIN_S
        listeners = NativeListeners(target, every, listen_s, args.drain)
    else:
        listeners = Listeners(target, sample_every(args.subscribers * args.rate))
    publisher = Publisher(target)
    profiler: asyncio.subprocess.Process | None = None
    try:
        await target.prepare()
        connect_s = await listeners.open(args.subscribers)
        subscribed = listeners.subscribed
        start = time.time() + START_DELAY_S
        await asyncio.sleep(START_DELAY_S)
        server_cpu0, own_cpu0, driver_cpu0 = cpu_s(server), own_cpu_s(), listeners.cpu_s()
        profiler = await start_profiler(args.profile, server.pid, args.duration) if args.profile else None
        sent = await run_open_loop(rate=args.rate, duration=args.duration, start=start, fire=publisher.fire)
        sends_end = time.time()
        server_cpu1, own_cpu1, driver_cpu1 = cpu_s(server), own_cpu_s(), listeners.cpu_s()
        deadline = sends_end + args.drain
        # A publish still unanswered may have been broadcast: it is owed, like an accepted one.
        unanswered = await publisher.wait(deadline)
        expected = (publisher.accepted + unanswered) * subscribed
        await listeners.drain(expected, deadline, sends_end)
        end = time.time()
        server_cpu2 = cpu_s(server)
        rss = server.memory_info().rss
    finally:
        await publisher.cancel()
        if profiler is not None:
            await profiler.wait()
        await listeners.close()
        await target.close()
    send_s = sends_end - start
    window = max(send_s, listeners.last_delivery - start)
    delivered = listeners.delivered
    latency, sample = listeners.latency()
    own_cpu, driver_cpu = own_cpu1 - own_cpu0, driver_cpu1 - driver_cpu0
    return {
        "kind": args.kind,
        "driver": args.driver,
        "subscribers": subscribed,
        "rate": args.rate,
        "duration_s": round(send_s, 3),
        "sent": sent,
        "accepted": publisher.accepted,
        "publish_failed": publisher.failed,
        "publish_unanswered": unanswered,
        "expected": expected,
        "delivered": delivered,
        "delivered_per_s": round(delivered / window, 1) if window > 0 else None,
        "delivery_ratio": round(delivered / expected, 4) if expected else None,
        "latency_ms": latency,
        "latency_sample": sample,
        "server_cpu": round((server_cpu1 - server_cpu0) / send_s, 3),
        "server_cpu_s_per_million": round((server_cpu2 - server_cpu0) / delivered * 1e6, 3)
        if delivered
        else None,
        "server_rss_mib": round(rss / 2**20, 1),
        "generator_cpu": round((own_cpu + driver_cpu) / send_s, 3),
        "publisher_cpu": round(own_cpu / send_s, 3),
        "driver_cpu": round(driver_cpu / send_s, 3),
        "drain_s": round(end - sends_end, 3),
        "connect_s": round(connect_s, 3),
        "errors": listeners.errors,
    }


async def start_profiler(path: str, pid: int, seconds: float) -> asyncio.subprocess.Process:
    """py-spy sampling the server over the send window, without pausing it (--nonblocking).

    Only samples holding the GIL count (--gil): time the loop waits in epoll is left out.

    It runs on the generator's core (it inherits the pinning), so it costs the server nothing.
    """
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    command = [
        py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
        "--rate", "200", "--gil", "--format", "raw", "--nonblocking", "--output", path,
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def idle_point(args: argparse.Namespace, server: psutil.Process) -> dict[str, Any]:
    target = TARGETS[args.kind](args.url)
    listeners = Listeners(target, 1)
    try:
        await target.prepare()
        await asyncio.sleep(IDLE_SETTLE_S)
        before = server.memory_info().rss
        connect_s = await listeners.open(args.idle)
        await asyncio.sleep(IDLE_SETTLE_S)
        after = server.memory_info().rss
    finally:
        await listeners.close()
        await target.close()
    joined = len(listeners.conns)
    return {
        "kind": args.kind,
        "idle_connections": joined,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "rss_per_connection_kib": round((after - before) / joined / 1024, 2) if joined else None,
        "connect_per_s": round(joined / connect_s, 1) if connect_s > 0 else None,
        "errors": listeners.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--url", required=True, help="server base URL, http://HOST:PORT")
    parser.add_argument("--server-pid", type=int, required=True, help="pid whose CPU and RSS are read")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second into the room")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--drain", type=float, default=5.0, help="max seconds to wait for late deliveries")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the server over the send window")
    parser.add_argument(
        "--driver",
        choices=("python", "native"),
        default="python",
        help="who listens: Python connections, or the C driver wsdrive (livemart only)",
    )
    parser.add_argument(
        "--idle", type=int, default=0, help="instead: open this many idle subscribers, report RSS"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = psutil.Process(args.server_pid)
    point = idle_point if args.idle else load_point
    result = uvloop.run(point(args, server))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
