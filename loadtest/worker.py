"""A generator process: open its share of connections, run its share of the schedule, report.

Talks to the parent over a pipe: it sends ("ready", subscribed), waits for ("go", start),
sends ("progress", {...}) about once a second, and ends with ("done", WorkerReport) or
("failed", reason). A shared counter tells every worker when all of them have finished
sending, so none stops listening while another is still publishing.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any
from urllib.parse import quote, urlsplit

from websockets.exceptions import ConnectionClosed

from loadtest import frames
from loadtest.counting import MarkerCounter
from loadtest.plan import Member, Plan
from loadtest.rawclient import HandshakeFailed, RawConnection, keep_alive
from loadtest.scenarios import SCENARIOS
from loadtest.scenarios.base import REPLY_TIMEOUT_S, Driver, error_code
from loadtest.schedule import run_open_loop
from loadtest.stats import Recorder, WorkerReport, now_us, record_us
from loadtest.tokens import mint
from loadtest.wsclient import Client, ReplyTimeout, connect_error_code

SUBSCRIBE_ID = 1

CONNECT_CONCURRENCY = 100
"""Handshakes in flight at once per worker."""
OPEN_TIMEOUT_S = 10.0
CONNECT_BUDGET_S = 60.0
"""The connection phase may last the ramp plus this; stragglers count as connect_timeout."""
IDLE_S = 1.0
"""After everyone has sent, this long without a delivery ends the drain early."""
PROGRESS_EVERY_S = 1.0
CLOSE_BUDGET_S = 5.0


def main(plan: Plan, index: int, link: Connection, finished: Synchronized[int]) -> None:
    """Process entry point (spawned by the runner)."""
    try:
        report = _run(Worker(plan, index, link, finished).run())
    except KeyboardInterrupt:
        return  # the parent saw the same Ctrl-C and is stopping everyone
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        link.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        link.send(("done", report))
    finally:
        link.close()


def _run(coro: Any) -> WorkerReport:
    """Run on uvloop when it is installed (uvicorn[standard] brings it): cheaper per frame."""
    try:
        import uvloop
    except ImportError:
        result: WorkerReport = asyncio.run(coro)
        return result
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(coro)
        return result


def listen_error_code(exc: BaseException) -> str:
    """`connect_error_code` for the raw client's exceptions."""
    if isinstance(exc, HandshakeFailed):
        return f"connect_http_{exc.status}" if exc.status else "connect_handshake"
    return connect_error_code(exc)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    def __init__(self, plan: Plan, index: int, link: Connection, finished: Synchronized[int]) -> None:
        self.plan = plan
        self.index = index
        self.link = link
        self.finished = finished
        self.rec = Recorder()
        self.clients: list[Client] = []
        self.scenario = SCENARIOS[plan.scenario]
        self.driver: Driver = self.scenario.driver(plan, self.rec, self.clients)
        self.inflight: set[asyncio.Task[None]] = set()
        self.cpu_peak = 0.0
        self.listeners: list[RawConnection] = []
        """Connections that only count markers (drivers with `count_only`)."""
        self.stopping = False
        self.pinging: asyncio.Task[None] | None = None

    async def run(self) -> WorkerReport:
        connect_started = time.time()
        # From the first connection on: a slow connection phase must not leave early ones silent.
        self.pinging = asyncio.create_task(keep_alive(self.listeners))
        await self.connect_all()
        connect_s = time.time() - connect_started
        self.link.send(("ready", dict(self.rec.subscribed)))
        message = await asyncio.to_thread(self.link.recv)
        if message[0] != "go":
            raise RuntimeError(f"expected go, got {message[0]!r}")
        start = float(message[1])
        self.rec.start = start
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu_start = cpu_seconds()
        progress = asyncio.create_task(self.report_progress())
        try:
            await run_open_loop(
                rate=self.plan.rate,
                duration=self.plan.duration,
                start=start,
                fire=self.fire,
                first=self.index,
                step=self.plan.workers,
            )
            sends_end, cpu_sends = time.time(), cpu_seconds() - cpu_start
            await self.drain(sends_end + self.plan.drain)
        finally:
            progress.cancel()
            await self.shutdown()
        return self.rec.report(
            sends_end=sends_end, connect_s=connect_s, cpu_s=cpu_sends, cpu_peak=self.cpu_peak
        )

    def fire(self, k: int, due: float) -> None:
        record_us(self.rec.histograms["lag"], now_us() - due * 1e6)
        task = asyncio.create_task(self.driver.send(k, due))
        self.inflight.add(task)
        task.add_done_callback(self.sent)

    def sent(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in the generator, not a server failure: count it and show it once.
            if not self.rec.errors["generator_bug"]:
                traceback.print_exception(task.exception(), file=sys.stderr)
            self.rec.error("generator_bug")

    async def drain(self, deadline: float) -> None:
        """Wait for replies, then for deliveries to go quiet, never past `deadline`."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=max(0.0, deadline - time.time()))
        with self.finished.get_lock():
            self.finished.value += 1
        everyone_done = 0.0
        while time.time() < deadline:
            if not everyone_done and self.finished.value >= self.plan.workers:
                everyone_done = time.time()
            quiet_since = max(everyone_done, self.rec.last_delivery)
            if everyone_done and not self.inflight and time.time() - quiet_since >= IDLE_S:
                break
            await asyncio.sleep(0.05)
        for task in list(self.inflight):
            task.cancel()
            self.rec.error("unfinished")

    async def connect_all(self) -> None:
        mine = self.plan.members_of(self.index)
        self.rec.counts["connect_attempts"] = len(mine)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        began = time.time()
        total = len(self.plan.members)

        async def one(position: int, member: Member) -> None:
            place = self.index + position * self.plan.workers
            await asyncio.sleep(max(0.0, began + self.plan.ramp * place / total - time.time()))
            async with gate:
                await self.connect(member)

        tasks = [asyncio.create_task(one(i, m)) for i, m in enumerate(mine)]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.plan.ramp + CONNECT_BUDGET_S)
        for task in late:
            task.cancel()
            self.rec.error("connect_timeout")
        if late:
            await asyncio.wait(late)

    async def connect(self, member: Member) -> None:
        """Handshake and subscribe one member; count the failure if either fails."""
        if self.driver.count_only:
            await self.listen(member)
            return
        token = mint(self.plan.secret, member.user_id, member.name, self.plan.token_ttl_s)
        began = now_us()
        try:
            client = await Client.open(
                self.plan.ws_url,
                token,
                self.plan.protocol,
                member,
                self,
                parse_pushes=self.driver.parse_pushes,
                open_timeout_s=OPEN_TIMEOUT_S,
                reply_timeout_s=REPLY_TIMEOUT_S,
            )
        except Exception as exc:
            self.rec.error(connect_error_code(exc))
            return
        record_us(self.rec.histograms["connect"], now_us() - began)
        try:
            reply = await client.request("subscribe", ch=member.channel)
        except (ReplyTimeout, ConnectionClosed):
            self.rec.error("subscribe_failed")
            await client.close()
            return
        except asyncio.CancelledError:
            await client.close()
            raise
        code = error_code(reply)
        if code is not None:
            self.rec.error(f"subscribe_{code}")
            await client.close()
            return
        self.rec.subscribed[member.channel] += 1
        self.clients.append(client)

    async def listen(self, member: Member) -> None:
        """Like `connect`, for a member that only counts what it receives (raw stream scan)."""
        token = mint(self.plan.secret, member.user_id, member.name, self.plan.token_ttl_s)
        subprotocol = frames.SUBPROTOCOLS[self.plan.protocol]
        url = f"{self.plan.ws_url}?token={quote(token)}"
        parts = urlsplit(url)
        began = now_us()
        try:
            conn = await RawConnection.open(
                parts.hostname or "", parts.port or 80, url, [subprotocol], timeout_s=OPEN_TIMEOUT_S
            )
        except Exception as exc:
            self.rec.error(listen_error_code(exc))
            return
        if conn.subprotocol != subprotocol:
            conn.abort()
            self.rec.error("connect_handshake")
            return
        record_us(self.rec.histograms["connect"], now_us() - began)
        command = {"id": SUBSCRIBE_ID, "op": "subscribe", "ch": member.channel}
        conn.send(frames.encode(self.plan.protocol, command), text=self.plan.protocol == "json")
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                reply = await self.subscribe_reply(conn)
        except (TimeoutError, ConnectionError, frames.BadFrame):
            self.rec.error("subscribe_failed")
            conn.abort()
            return
        except asyncio.CancelledError:
            conn.abort()
            raise
        code = error_code(reply)
        if code is not None:
            self.rec.error(f"subscribe_{code}")
            conn.close()
            return
        self.rec.subscribed[member.channel] += 1
        # A deterministic phase per connection spreads the latency sample over all of them.
        counter = MarkerCounter(self.plan.sample_every, len(self.listeners), self.driver.lanes)
        conn.count(counter, self.counted)
        conn.closed.add_done_callback(lambda _: self.lost(conn))
        self.listeners.append(conn)

    async def subscribe_reply(self, conn: RawConnection) -> dict[str, Any]:
        while True:
            for obj in frames.decode(self.plan.protocol, await conn.recv()):
                if "ch" not in obj and obj.get("id") == SUBSCRIBE_ID:
                    return obj

    def counted(self, conn: RawConnection, found: int, samples: list[tuple[str, int]]) -> None:
        self.rec.counted(found, samples, now_us())

    def lost(self, conn: RawConnection) -> None:
        if not self.stopping:
            self.rec.error(f"closed_{conn.close_code or 1006}")

    async def report_progress(self) -> None:
        """Once a second: tell the parent how far we are, and note this second's CPU share."""
        last_wall, last_cpu = time.time(), cpu_seconds()
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            wall, cpu = time.time(), cpu_seconds()
            self.cpu_peak = max(self.cpu_peak, (cpu - last_cpu) / max(wall - last_wall, 1e-3))
            last_wall, last_cpu = wall, cpu
            self.link.send(
                (
                    "progress",
                    {
                        "sent": sum(self.rec.sent.values()),
                        "delivered": self.rec.total_delivered(),
                        "errors": sum(self.rec.errors.values()),
                    },
                )
            )

    async def shutdown(self) -> None:
        self.stopping = True
        if self.pinging is not None:
            self.pinging.cancel()
        for conn in self.listeners:
            if conn.counter is not None:
                self.rec.add_counts(conn.counter.counts)
            conn.close()
        await self.driver.close()
        closing = [asyncio.create_task(c.close()) for c in self.clients]
        if closing:
            _, stuck = await asyncio.wait(closing, timeout=CLOSE_BUDGET_S)
            for task in stuck:
                task.cancel()

    # Sink: traffic arriving on this worker's connections.

    def deliveries(self, client: Client, hits: list[tuple[str, int]], received_us: int) -> None:
        for lane, sent_us in hits:
            self.rec.delivery(lane, sent_us, received_us)

    def push(self, client: Client, push: dict[str, Any], received_us: int) -> None:
        self.driver.on_push(client, push, received_us)

    def problem(self, client: Client, code: str) -> None:
        self.rec.error(code)
