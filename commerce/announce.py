"""Room events of flash sales, thinned so a sell-out burst cannot flood a room.

``stock``: at most one per sale per interval from each process, always carrying the
latest figure (a delayed event re-reads the ledger when it fires), and a 0 goes out at
once. ``version`` lets clients drop an older figure that arrives after a newer one
from another process.

``purchase``: a token bucket per room; buyers beyond it are gathered for one window and
announced as one event per product (``"Ana and 41 others"``, with ``count``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from realtime.node import Node
from realtime.ratelimit import TokenBucket

from .entities import Sale
from .ledger import StockLedger

log = logging.getLogger("livemart.commerce")

#: Rooms whose purchase budget is tracked at most (all are forgotten beyond it).
MAX_TRACKED_ROOMS = 10_000


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


class _Tasks:
    """Publishes in flight, so stop() can wait for them with a bound."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("room event not published: %s", task.exception())

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in late:
                task.cancel()


class StockAnnouncer:
    """Coalesces ``stock {sale_id, remaining, version}`` events per sale."""

    def __init__(self, node: Node, ledger: StockLedger, *, interval_s: float) -> None:
        self._node = node
        self._ledger = ledger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks = _Tasks()

    def changed(self, sale: Sale, remaining: int, version: int) -> None:
        """This process changed the sale's stock: tell the room, now or soon."""
        if sale.room_id is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._last.get(sale.id, float("-inf")) + self._interval_s
        if remaining == 0 or (now >= due and sale.id not in self._timers):
            timer = self._timers.pop(sale.id, None)
            if timer is not None:
                timer.cancel()
            self._last[sale.id] = now
            self._tasks.spawn(self._publish(sale, remaining, version))
        elif sale.id not in self._timers:
            self._timers[sale.id] = loop.call_at(due, self._fire, sale)

    def _fire(self, sale: Sale) -> None:
        self._timers.pop(sale.id, None)
        self._last[sale.id] = asyncio.get_running_loop().time()
        self._tasks.spawn(self._publish_latest(sale))

    async def _publish_latest(self, sale: Sale) -> None:
        level = (await self._ledger.levels([sale.id]))[sale.id]
        if level is not None:
            await self._publish(sale, level.remaining, level.version)

    async def _publish(self, sale: Sale, remaining: int, version: int) -> None:
        if sale.room_id is not None:
            data = {"sale_id": sale.id, "remaining": remaining, "version": version}
            await self._node.publish(room_channel(sale.room_id), "stock", data)

    async def close(self, timeout_s: float) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self._tasks.drain(timeout_s)


class PurchaseAnnouncer:
    """``purchase {name, product_title}`` per buyer, aggregated once a room gets busy."""

    def __init__(self, node: Node, *, rate_per_s: float, burst: int, window_s: float) -> None:
        self._node = node
        self._rate = rate_per_s
        self._burst = burst
        self._window_s = window_s
        self._buckets: dict[str, TokenBucket] = {}
        #: Buyers waiting for the room's next summary: room -> product title -> names.
        self._waiting: dict[str, dict[str, list[str]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks = _Tasks()

    def bought(self, room_id: str, name: str, product_title: str) -> None:
        bucket = self._buckets.get(room_id)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_ROOMS:
                self._buckets.clear()
            bucket = self._buckets[room_id] = TokenBucket(self._rate, self._burst)
        if room_id not in self._waiting and bucket.take():
            data = {"name": name, "product_title": product_title, "count": 1}
            self._tasks.spawn(self._node_publish(room_id, data))
            return
        titles = self._waiting.setdefault(room_id, {})
        titles.setdefault(product_title, []).append(name)
        if room_id not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[room_id] = loop.call_later(self._window_s, self._flush, room_id)

    def _flush(self, room_id: str) -> None:
        self._timers.pop(room_id, None)
        for title, names in self._waiting.pop(room_id, {}).items():
            self._tasks.spawn(self._node_publish(room_id, summary(names, title)))

    async def _node_publish(self, room_id: str, data: dict[str, Any]) -> None:
        await self._node.publish(room_channel(room_id), "purchase", data)

    async def close(self, timeout_s: float) -> None:
        for room_id in list(self._timers):
            self._timers.pop(room_id).cancel()
            self._flush(room_id)
        await self._tasks.drain(timeout_s)


def summary(names: list[str], product_title: str) -> dict[str, Any]:
    """One event for several buyers of one product: ``"Ana and 3 others"``."""
    others = len(names) - 1
    plural = "s" if others > 1 else ""
    name = f"{names[0]} and {others} other{plural}" if others else names[0]
    return {"name": name, "product_title": product_title, "count": len(names)}
