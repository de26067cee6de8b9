"""The commerce Module: products, flash sales, reservations and orders, wired to the core."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from starlette.routing import BaseRoute

from realtime.errors import ProtocolError
from realtime.server import Core

from . import routes
from .announce import PurchaseAnnouncer, StockAnnouncer
from .catalog import Catalog
from .checkout import Checkout
from .metrics import CommerceMetrics
from .ops import reserve_op
from .peers import GroupRoles, RoomDirectory
from .reconcile import Reconciler
from .recorder import HoldRecorder
from .reservations import ReservationStore
from .sales import SaleDesk
from .settings import CommerceSettings
from .sweeper import Sweeper

log = logging.getLogger("livemart.commerce")

#: How long stop() waits for room events still being published.
STOP_TIMEOUT_S = 2.0


class Commerce:
    """Flash sales for live rooms and merchant groups."""

    migrations: Path | None = Path(__file__).with_name("migrations") / "versions"

    def __init__(
        self,
        core: Core,
        *,
        catalog: Catalog,
        rooms: RoomDirectory,
        groups: GroupRoles,
        settings: CommerceSettings,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.rooms = rooms
        self.db = core.db
        self.metrics = CommerceMetrics(core.metrics.registry)
        self.reservations = ReservationStore(core.db)
        self.recorder = HoldRecorder(self.reservations)
        self.reconciler = Reconciler(catalog, self.reservations, self.metrics)
        self.stock_events = StockAnnouncer(
            core.node, catalog.ledger, interval_s=settings.stock_event_interval_s
        )
        self.purchases = PurchaseAnnouncer(
            core.node,
            rate_per_s=settings.purchase_rate_per_s,
            burst=settings.purchase_burst,
            window_s=settings.purchase_window_s,
        )
        self.desk = SaleDesk(catalog=catalog, rooms=rooms, groups=groups, node=core.node)
        self.checkout = Checkout(
            catalog=catalog,
            reservations=self.reservations,
            recorder=self.recorder,
            reconciler=self.reconciler,
            groups=groups,
            stock_events=self.stock_events,
            purchases=self.purchases,
            metrics=self.metrics,
            settings=settings,
        )
        self.sweeper = Sweeper(
            catalog=catalog,
            reservations=self.reservations,
            reconciler=self.reconciler,
            checkout=self.checkout,
            desk=self.desk,
            settings=settings,
            metrics=self.metrics,
        )
        core.node.add_op("reserve", reserve_op(self.checkout, settings))

    def routes(self) -> Sequence[BaseRoute]:
        return routes.build(self)

    async def start(self) -> None:
        if self.settings.reconcile_on_start:
            try:
                rebuilt = await self.reconciler.check_open_sales()
            except ProtocolError as exc:  # the sweeper heals missing state once it is back
                log.warning("start-up stock check skipped: %s", exc.message)
            else:
                log.info("start-up stock check: %d sale(s) rebuilt from SQL", rebuilt)
        self.sweeper.start()

    async def stop(self) -> None:
        await self.sweeper.stop()
        await self.checkout.close()
        await self.recorder.close(STOP_TIMEOUT_S)
        await self.stock_events.close(STOP_TIMEOUT_S)
        await self.purchases.close(STOP_TIMEOUT_S)
