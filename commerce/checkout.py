"""Reserve, confirm, release: the buyer's side of a flash sale.

Order of writes (the guarantee docs/flash-sales.md states):

* reserve: ledger first (one atomic step), then the SQL row, then the reply. A hold
  whose row never lands is voided by the sweeper at its deadline; a hold whose row is
  fenced out by a rebuild is undone at once. The reply waits for the row, so no client
  is ever told it holds a unit that SQL does not know about.
* confirm and release: SQL first, then the ledger. If the ledger step is lost the
  sweeper finishes it when the hold's deadline passes (SQL says what to do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import NoReturn

from realtime.auth import Identity
from realtime.errors import ProtocolError

from .announce import PurchaseAnnouncer, StockAnnouncer
from .catalog import Catalog
from .entities import CONFIRMED, EXPIRED, HELD, RELEASED, VOID, Order, Reservation, Sale, new_id, now_ms
from .inputs import ReserveRequest
from .ledger import Attempt, DueHold, Level, Outcome, key_field
from .metrics import CommerceMetrics
from .peers import GroupRoles
from .reconcile import Reconciler
from .recorder import HoldRecorder
from .reservations import Recording, ReservationStore
from .settings import CommerceSettings

log = logging.getLogger("livemart.commerce")

#: Ledger round trips one reservation may take (rebuilds or fences in between).
MAX_ATTEMPTS = 3
#: Pause between reads while a replay waits for another process's row.
REPLAY_POLL_S = 0.05

_REFUSALS = {
    Outcome.SOLD_OUT: ("sold_out", "sold out"),
    Outcome.LIMIT_EXCEEDED: ("limit_exceeded", "over the per-customer limit for this sale"),
    Outcome.NOT_STARTED: ("not_started", "the sale has not started yet"),
    Outcome.ENDED: ("ended", "the sale has ended"),
}


@dataclass(slots=True)
class _SoldOut:
    """This process saw the sale sold out at ``version``."""

    version: int
    #: When the ledger last said so (monotonic seconds).
    seen: float
    #: The sale is for its group's members: non-members must hear not_member instead.
    members_only: bool
    #: Keys the ledger would replay (``key_field``); None until fetched.
    keys: frozenset[str] | None = None
    #: One attempt is on its way to the ledger to see whether units came back.
    probing: bool = False


@dataclass(frozen=True, slots=True)
class ReservationReply:
    """A reservation answer: the reservation and whether it was an earlier one replayed."""

    reservation: Reservation
    replayed: bool


class Checkout:
    """Reservations and orders for buyers."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        reservations: ReservationStore,
        recorder: HoldRecorder,
        reconciler: Reconciler,
        groups: GroupRoles,
        stock_events: StockAnnouncer,
        purchases: PurchaseAnnouncer,
        metrics: CommerceMetrics,
        settings: CommerceSettings,
    ) -> None:
        self._catalog = catalog
        self._ledger = catalog.ledger
        self._reservations = reservations
        self._recorder = recorder
        self._reconciler = reconciler
        self._groups = groups
        self._stock_events = stock_events
        self._purchases = purchases
        self._metrics = metrics
        self._settings = settings
        self._sold_out: dict[str, _SoldOut] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- reserve ------------------------------------------------------------------

    def refuse_at_once(self, identity: Identity, sale_id: str, request: ReserveRequest) -> None:
        """Raise sold_out if this process knows the sale is sold out, without any I/O.

        The WebSocket op calls it before starting :meth:`reserve`, so the rush after a
        sell-out is answered without a task or a ledger round trip.
        """
        flag = self._sold_out.get(sale_id)
        if flag is not None and not flag.members_only:
            self._refuse_if_sold_out(sale_id, identity.require_user(), request.key)

    async def reserve(self, identity: Identity, sale_id: str, request: ReserveRequest) -> ReservationReply:
        user_id = identity.require_user()
        sale = await self._catalog.sale(sale_id)
        if sale.group_id is not None and await self._groups.role(sale.group_id, user_id) is None:
            raise ProtocolError("not_member", "this sale is for members of its group only")
        self._refuse_if_sold_out(sale.id, user_id, request.key)
        key = request.key or new_id()
        for _ in range(MAX_ATTEMPTS):
            now = now_ms()
            attempt = Attempt(sale.id, new_id(), user_id, request.quantity, key, now)
            result = await self._ledger.reserve(attempt)
            self._metrics.attempts_by_outcome[result.outcome].inc()
            if result.outcome is Outcome.MISSING:
                await self._reconciler.rebuild(sale.id, reason="missing")
                continue
            if result.outcome is Outcome.REPLAY:
                earlier = await self._replayed(sale, user_id, key, result.reservation_id, request.quantity)
                if earlier is not None:
                    return ReservationReply(earlier, True)
                continue
            if result.outcome is not Outcome.HELD:
                self._refused(sale, result.outcome, result.version)
            self._sold_out.pop(sale.id, None)
            res = Reservation(
                id=attempt.reservation_id,
                sale_id=sale.id,
                user_id=user_id,
                quantity=request.quantity,
                status=HELD,
                source=request.source,
                idem_key=key,
                expires_ms=result.deadline_ms,
                created_ms=now,
            )
            recorded = await self._recorder.record(res, result.generation)
            if recorded.outcome is Recording.RECORDED:
                self._stock_events.changed(sale, result.remaining, result.version)
                return ReservationReply(res, False)
            # SQL refused the row: the hold must not stand.
            self._metrics.undone.labels(recorded.outcome.value).inc()
            self.units_back(sale, await self._ledger.give_back(sale.id, res.id, key=(user_id, key)))
            if recorded.outcome is Recording.KEY_TAKEN and recorded.existing is not None:
                if recorded.existing.sale_id != sale.id:
                    raise ProtocolError("conflict", "this Idempotency-Key was already used for another sale")
                return ReservationReply(recorded.existing, True)
            if recorded.outcome is Recording.FENCED:
                await self._reconciler.after_fence(sale.id)
            elif recorded.outcome is Recording.OVER_STOCK:  # the ledger over-counts stock
                await self._reconciler.rebuild(sale.id, reason="short")
        raise ProtocolError("unavailable", "stock is being rebuilt; retry with the same key")

    def _refused(self, sale: Sale, outcome: Outcome, version: int) -> NoReturn:
        if outcome is Outcome.SOLD_OUT:
            self._saw_sold_out(sale, version)
        code, message = _REFUSALS[outcome]
        raise ProtocolError(code, message)

    async def _replayed(
        self, sale: Sale, user_id: str, key: str, reservation_id: str, quantity: int
    ) -> Reservation | None:
        """The reservation an earlier request with this key made; None if it never stood.

        The earlier request may still be writing its row on another process: wait for it
        a bounded time rather than answer before the row is durable. If the row has not
        come by then (that process died between the ledger and SQL, or is that slow), fence
        the hold out with a void row, as the sweeper does at the hold's deadline: whichever
        row lands first decides, so the buyer is not kept waiting for the whole hold.
        """
        deadline = time.monotonic() + self._settings.replay_wait_s
        while True:
            res = await self._reservations.get(reservation_id)
            if res is not None and res.status != VOID:
                return res
            if res is not None:  # voided (here, or by the sweeper): the key is free again
                self.units_back(
                    sale, await self._ledger.give_back(sale.id, reservation_id, key=(user_id, key))
                )
                return None
            if time.monotonic() >= deadline:
                await self._reservations.void(sale.id, DueHold(reservation_id, user_id, quantity), now_ms())
                continue  # read whichever row won
            await asyncio.sleep(REPLAY_POLL_S)

    # --- the local sold-out flag ----------------------------------------------------

    def _refuse_if_sold_out(self, sale_id: str, user_id: str, key: str | None) -> None:
        """Answer sold_out without the ledger, except for replays and one periodic probe.

        A key the ledger knows must reach it (the answer is the earlier reservation);
        any other attempt would be told sold_out there too. No key: never a replay.
        """
        flag = self._sold_out.get(sale_id)
        if flag is None or flag.keys is None:
            return
        if key is not None and key_field(user_id, key) in flag.keys:
            return
        if not flag.probing and time.monotonic() - flag.seen >= self._settings.sold_out_probe_s:
            flag.probing = True
            return
        self._metrics.fast_rejects.inc()
        raise ProtocolError("sold_out", "sold out")

    def _saw_sold_out(self, sale: Sale, version: int) -> None:
        sale_id = sale.id
        flag = self._sold_out.get(sale_id)
        if flag is not None and flag.version == version:
            flag.seen = time.monotonic()
            flag.probing = False
            return
        flag = _SoldOut(version, time.monotonic(), members_only=sale.group_id is not None)
        self._sold_out[sale_id] = flag
        task = asyncio.ensure_future(self._fetch_keys(sale_id, flag))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fetch_keys(self, sale_id: str, flag: _SoldOut) -> None:
        try:
            flag.keys = await self._ledger.held_keys(sale_id)
        except ProtocolError:
            self._sold_out.pop(sale_id, None)

    def units_back(self, sale: Sale, level: Level | None) -> None:
        """Units returned to stock (None: nothing was returned)."""
        if level is not None:
            self._sold_out.pop(sale.id, None)
            self._stock_events.changed(sale, level.remaining, level.version)

    # --- confirm and release --------------------------------------------------------

    async def _own(self, identity: Identity, reservation_id: str) -> tuple[Reservation, Sale]:
        user_id = identity.require_user()
        res = await self._reservations.get(reservation_id)
        if res is None or res.status == VOID:
            raise ProtocolError("not_found", "no such reservation")
        if res.user_id != user_id:
            raise ProtocolError("forbidden", "this reservation belongs to someone else")
        return res, await self._catalog.sale(res.sale_id)

    async def confirm(self, identity: Identity, reservation_id: str) -> Order:
        """Pay for a hold (the payment stand-in): one order, durable before the reply."""
        res, sale = await self._own(identity, reservation_id)
        status = res.status
        if status == HELD:
            result = await self._reservations.confirm(res, sale, now_ms())
            if isinstance(result, Order):
                await self._settle(sale, res.id)
                self._metrics.orders.inc()
                if sale.room_id is not None:
                    self._purchases.bought(sale.room_id, identity.name, sale.product.title)
                return result
            status = result
        if status == EXPIRED:
            await self._give_back(sale, res.id)
            raise ProtocolError(
                "expired", "the hold expired before it was confirmed; the units went back on sale"
            )
        if status == CONFIRMED:
            raise ProtocolError("conflict", "this reservation is already confirmed (see GET /api/orders)")
        if status == RELEASED:
            raise ProtocolError("conflict", "this reservation was released")
        raise ProtocolError("not_found", "no such reservation")

    async def release(self, identity: Identity, reservation_id: str) -> Reservation:
        """Give a hold back; its units return to stock at once. Repeating it is harmless."""
        res, sale = await self._own(identity, reservation_id)
        status = res.status
        if status == HELD:
            status = await self._reservations.release(res, now_ms())
        if status == CONFIRMED:
            raise ProtocolError("conflict", "a confirmed reservation cannot be released")
        await self._give_back(sale, res.id)
        return replace(res, status=status)

    async def _give_back(self, sale: Sale, reservation_id: str) -> None:
        """Ledger step after SQL said the hold is over; the sweeper retries if it fails."""
        try:
            self.units_back(sale, await self._ledger.give_back(sale.id, reservation_id))
        except ProtocolError as exc:
            log.warning("giving back %s later (sweeper): %s", reservation_id, exc.message)

    async def _settle(self, sale: Sale, reservation_id: str) -> None:
        try:
            await self._ledger.settle(sale.id, reservation_id)
        except ProtocolError as exc:
            log.warning("settling %s later (sweeper): %s", reservation_id, exc.message)

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
