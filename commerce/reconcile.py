"""Rebuilding a sale's ledger state from SQL, the durable truth.

A rebuild bumps the sale's generation in SQL, reads every held and confirmed
reservation in the same transaction, and loads that into the ledger under the new
generation. Reservations the old ledger granted but SQL had not recorded yet then fail
their fenced insert and are undone (commerce.reservations), so a rebuild never counts a
unit twice and never loses one that a client was told it holds.

It runs when the ledger has no state for a sale (Redis lost it), when it has fewer
units out than SQL (Redis restored from an old snapshot), when its generation is behind
SQL's (a rebuild died half-way), on start-up, and on an operator's command.
"""

from __future__ import annotations

import asyncio
import logging

from realtime.errors import ProtocolError

from .catalog import Catalog
from .entities import SaleRecord, now_ms
from .ledger import Level
from .metrics import CommerceMetrics
from .reservations import ReservationStore

log = logging.getLogger("livemart.commerce")


class Reconciler:
    """Rebuilds ledger state from SQL; at most one rebuild per sale at a time per process."""

    def __init__(self, catalog: Catalog, reservations: ReservationStore, metrics: CommerceMetrics) -> None:
        self._catalog = catalog
        self._reservations = reservations
        self._metrics = metrics
        self._running: dict[str, asyncio.Future[Level | None]] = {}

    async def rebuild(self, sale_id: str, *, reason: str) -> Level | None:
        """Rebuild now (joining a rebuild of the same sale already running here)."""
        running = self._running.get(sale_id)
        if running is None:
            running = asyncio.ensure_future(self._rebuild(sale_id, reason))
            self._running[sale_id] = running
            running.add_done_callback(lambda _: self._running.pop(sale_id, None))
        return await asyncio.shield(running)

    async def _rebuild(self, sale_id: str, reason: str) -> Level | None:
        sale = await self._catalog.sale(sale_id)
        snapshot = await self._reservations.snapshot(sale)
        if snapshot is None:
            raise ProtocolError("not_found", "no such flash sale")
        loaded = await self._catalog.ledger.load(snapshot, now_ms())
        level = await self._catalog.level(sale_id)
        self._metrics.rebuilds.labels(reason).inc()
        log.info(
            "rebuilt sale %s from SQL (%s): generation %d, %d live reservations, loaded=%s, remaining=%s",
            sale_id,
            reason,
            snapshot.generation,
            len(snapshot.holds),
            loaded,
            None if level is None else level.remaining,
        )
        return level

    async def check(self, record: SaleRecord) -> bool:
        """Rebuild if the ledger is missing, behind SQL's generation, or short of units.

        SQL is read before the ledger: units move ledger-first on the way out and
        SQL-first on the way back, so a healthy ledger never shows fewer units out than
        SQL did a moment earlier (a false alarm only costs a harmless rebuild).
        """
        sale = record.sale
        sql_units = await self._reservations.live_units(sale.id)
        level = await self._catalog.level(sale.id)
        if level is None:
            reason = "missing"
        elif level.generation < record.generation:
            reason = "behind"
        elif sale.stock - level.remaining < sql_units:
            reason = "short"
        else:
            return False
        await self.rebuild(sale.id, reason=reason)
        return True

    async def after_fence(self, sale_id: str) -> None:
        """An insert was fenced out: make sure the ledger catches up with SQL's generation."""
        record = await self._catalog.store.sale(sale_id)
        level = await self._catalog.level(sale_id)
        if record is not None and (level is None or level.generation < record.generation):
            await self.rebuild(sale_id, reason="behind")

    async def check_open_sales(self) -> int:
        """The start-up pass: check every open sale; returns how many were rebuilt."""
        rebuilt = 0
        for record in await self._catalog.store.open_sales():
            if await self.check(record):
                rebuilt += 1
        return rebuilt
