"""The sweeper: a per-process loop that returns expired holds and starts and ends sales.

Expiry does not rely on Redis keyspace notifications (fire-and-forget, and only when
Redis itself deletes a key): each tick asks the ledger's deadline index for holds past
their deadline and lets SQL decide each one. Every process sweeps every open sale; the
SQL updates are conditional and the ledger steps idempotent, so two sweepers racing on
one hold return its units once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from realtime.errors import ProtocolError

from .catalog import Catalog
from .checkout import Checkout
from .entities import CONFIRMED, EXPIRED, RELEASED, VOID, Sale, SaleRecord, now_ms
from .ledger import DueHold, Level
from .metrics import CommerceMetrics
from .reconcile import Reconciler
from .reservations import ReservationStore
from .sales import SaleDesk
from .settings import CommerceSettings

log = logging.getLogger("livemart.commerce")

#: Expired holds handled per sale per tick at most.
DUE_BATCH = 500
#: Closed sales stay on the work list this long beyond the longest hold, so holds
#: granted just before the end still expire.
LINGER_MS = 60_000


class Sweeper:
    def __init__(
        self,
        *,
        catalog: Catalog,
        reservations: ReservationStore,
        reconciler: Reconciler,
        checkout: Checkout,
        desk: SaleDesk,
        settings: CommerceSettings,
        metrics: CommerceMetrics,
    ) -> None:
        self._catalog = catalog
        self._ledger = catalog.ledger
        self._reservations = reservations
        self._reconciler = reconciler
        self._checkout = checkout
        self._desk = desk
        self._settings = settings
        self._metrics = metrics
        self._work: dict[str, SaleRecord] = {}
        self._refreshed = float("-inf")
        #: Sales this process knows were announced / closed (saves a SQL update per tick).
        self._announced: set[str] = set()
        self._closed: set[str] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commerce-sweeper")

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.warning("sweeper did not stop within %.1fs; cancelled", timeout_s)

    def track(self, sale: Sale) -> None:
        """A sale created here: sweep it from the next tick, not the next refresh."""
        self._work[sale.id] = SaleRecord(sale, 1, None, None)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except ProtocolError as exc:
                log.warning("sweep skipped: %s", exc.message)
            except Exception:
                log.exception("sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.sweep_interval_s)

    async def sweep(self) -> None:
        """One pass over every open sale."""
        now = now_ms()
        records = await self._work_list(now)
        ids = list(records)
        if not ids:
            return
        levels = await self._ledger.levels(ids)
        for sale_id in ids:
            if levels[sale_id] is None:
                levels[sale_id] = await self._reconciler.rebuild(sale_id, reason="missing")
        for sale_id, holds in (await self._ledger.due(ids, now, limit=DUE_BATCH)).items():
            await self._expire(records[sale_id].sale, holds, now)
        for sale_id in ids:
            await self._lifecycle(records[sale_id], levels[sale_id], now)

    async def _work_list(self, now: int) -> dict[str, SaleRecord]:
        if time.monotonic() - self._refreshed >= self._settings.open_sales_refresh_s:
            since = now - self._settings.max_hold_seconds * 1000 - LINGER_MS
            fresh = await self._catalog.store.open_sales(closed_since_ms=since)
            self._work = {r.sale.id: r for r in fresh}
            self._refreshed = time.monotonic()
            self._announced &= self._work.keys()
            self._closed &= self._work.keys()
        return dict(self._work)

    async def _expire(self, sale: Sale, holds: list[DueHold], now: int) -> None:
        """Let SQL decide each due hold, then do the same in the ledger."""
        statuses = await self._reservations.expire([h.reservation_id for h in holds], now)
        for hold in holds:
            status = statuses.get(hold.reservation_id)
            if status is None:  # granted, but its row never arrived: fence it out
                status = await self._reservations.void(sale.id, hold, now)
            if status in (EXPIRED, RELEASED, VOID):
                level = await self._ledger.give_back(sale.id, hold.reservation_id)
                if level is not None:
                    self._metrics.expired.inc()
                self._checkout.units_back(sale, level)
            elif status == CONFIRMED:
                await self._ledger.settle(sale.id, hold.reservation_id)

    async def _lifecycle(self, record: SaleRecord, level: Level | None, now: int) -> None:
        sale = record.sale
        if record.announced_ms is None and sale.id not in self._announced and sale.started(now):
            await self._desk.announce_start(sale)
            self._announced.add(sale.id)
        if record.closed_ms is not None or sale.id in self._closed:
            return
        finished = sale.over(now) or (
            level is not None
            and level.remaining == 0
            and level.holds == 0
            and await self._reservations.held_count(sale.id) == 0
        )
        if finished:
            await self._desk.announce_end(sale)
            self._closed.add(sale.id)
