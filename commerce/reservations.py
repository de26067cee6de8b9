"""SQL for reservations and orders: the durable record of every unit that left stock.

Granted holds are recorded in a transaction that first locks the sale's row (a no-op
update: a row lock on PostgreSQL, the write lock on SQLite). Under that lock:

* Stock: rows are admitted only while held + confirmed units stay within the sale's
  stock. SQL never records an oversell, whatever the ledger answered (say, a Redis
  restored from an old snapshot); a refused row tells the caller to rebuild the ledger.
* Generation: a row is admitted only if the sale's ``generation`` is still the one the
  ledger answered from. A rebuild bumps the generation (taking the same lock) before it
  reads, so a hold is either recorded before the read (and counted) or refused (and
  its hold undone).
* Primary key: the sweeper writes a ``void`` row for a hold that has no row when its
  deadline passes; the late insert then fails on the key instead of resurrecting a hold
  whose units already went back.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from realtime.storage import Database

from .entities import (
    CONFIRMED,
    EXPIRED,
    HELD,
    LIVE_STATUSES,
    RELEASED,
    VOID,
    Order,
    Reservation,
    Sale,
    new_id,
)
from .ledger import DueHold, Hold, KeyRecord, Snapshot
from .models import orders, reservations, sales


class Recording(enum.Enum):
    RECORDED = "recorded"
    #: The sale's generation moved on: reconciliation rebuilt the ledger meanwhile.
    FENCED = "fenced"
    #: Recording it would put more units in SQL than the sale's stock.
    OVER_STOCK = "over_stock"
    #: The sweeper voided this reservation id first (its deadline passed).
    ID_TAKEN = "id_taken"
    #: The user already has a reservation under this key (``existing``).
    KEY_TAKEN = "key_taken"


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: Recording
    existing: Reservation | None = None


class ReservationStore:
    """Reservations and orders in SQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_many(self, sale_id: str, items: Sequence[tuple[Reservation, int]]) -> list[Recorded]:
        """Record granted holds of one sale in one transaction (see the module docstring).

        ``items`` pairs each reservation with the ledger generation it was granted in.
        Rows whose id or (user, key) already exist are skipped and explained.
        """
        lock = (
            sales.update()
            .where(sales.c.id == sale_id)
            .values(generation=sales.c.generation)
            .returning(sales.c.generation, sales.c.stock)
        )
        units_out = sa.select(sa.func.coalesce(sa.func.sum(reservations.c.quantity), 0)).where(
            reservations.c.sale_id == sale_id, reservations.c.status.in_(LIVE_STATUSES)
        )
        verdicts: dict[str, Recording] = {}
        async with self.db.begin() as conn:
            row = (await conn.execute(lock)).first()
            generation, stock = (None, 0) if row is None else (row.generation, row.stock)
            out = int(await conn.scalar(units_out) or 0)
            admitted = []
            for res, gen in items:
                if gen != generation:
                    verdicts[res.id] = Recording.FENCED
                elif out + res.quantity > stock:
                    verdicts[res.id] = Recording.OVER_STOCK
                else:
                    admitted.append(res)
                    out += res.quantity
            if admitted:
                stmt = self._insert_new(admitted).returning(reservations.c.id)
                for rid in await conn.scalars(stmt):
                    verdicts[rid] = Recording.RECORDED
        results = []
        for res, _ in items:
            verdict = verdicts.get(res.id)
            results.append(Recorded(verdict) if verdict is not None else await self._refused(res))
        return results

    def _insert_new(self, rows: Sequence[Reservation]) -> Any:
        """A multi-row insert that skips rows whose id or (user, key) already exists."""
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        values = [
            {
                "id": r.id,
                "sale_id": r.sale_id,
                "user_id": r.user_id,
                "quantity": r.quantity,
                "status": r.status,
                "source": r.source,
                "idem_key": r.idem_key,
                "expires_ms": r.expires_ms,
                "created_ms": r.created_ms,
                "updated_ms": r.created_ms,
            }
            for r in rows
        ]
        return insert(reservations).values(values).on_conflict_do_nothing()

    async def _refused(self, res: Reservation) -> Recorded:
        """Why an admitted row was skipped: its id was voided, or its key is taken."""
        if await self.get(res.id) is not None:
            return Recorded(Recording.ID_TAKEN)
        existing = None if res.idem_key is None else await self.by_key(res.user_id, res.idem_key)
        if existing is not None:
            return Recorded(Recording.KEY_TAKEN, existing)
        return Recorded(Recording.FENCED)

    async def get(self, reservation_id: str) -> Reservation | None:
        async with self.db.begin() as conn:
            query = reservations.select().where(reservations.c.id == reservation_id)
            row = (await conn.execute(query)).first()
        return None if row is None else Reservation.from_row(row._mapping)

    async def by_key(self, user_id: str, key: str) -> Reservation | None:
        query = reservations.select().where(reservations.c.user_id == user_id, reservations.c.idem_key == key)
        async with self.db.begin() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Reservation.from_row(row._mapping)

    async def confirm(self, res: Reservation, sale: Sale, now: int) -> Order | str:
        """Turn a held reservation into an order, exactly once.

        Returns the order, or the status that prevents it (``expired`` if the hold ran
        out, in which case it is now marked so).
        """
        mine = (reservations.c.id == res.id, reservations.c.status == HELD)
        order = Order(
            id=new_id(),
            reservation_id=res.id,
            sale_id=sale.id,
            user_id=res.user_id,
            product_id=sale.product.id,
            product_title=sale.product.title,
            quantity=res.quantity,
            price_cents=sale.price_cents,
            amount_cents=sale.price_cents * res.quantity,
            currency=sale.product.currency,
            source=res.source,
            room_id=sale.room_id,
            created_ms=now,
        )
        async with self.db.begin() as conn:
            confirmed = await conn.execute(
                reservations.update()
                .where(*mine, reservations.c.expires_ms > now)
                .values(status=CONFIRMED, updated_ms=now)
            )
            if confirmed.rowcount == 1:
                await conn.execute(orders.insert().values(**_order_values(order)))
                return order
            await conn.execute(
                reservations.update()
                .where(*mine, reservations.c.expires_ms <= now)
                .values(status=EXPIRED, updated_ms=now)
            )
            status = await conn.scalar(sa.select(reservations.c.status).where(reservations.c.id == res.id))
        return str(status)

    async def release(self, res: Reservation, now: int) -> str:
        """Give up a held reservation; returns its status afterwards.

        A hold past its deadline becomes ``expired`` rather than ``released``.
        """
        after = sa.case((reservations.c.expires_ms <= now, EXPIRED), else_=RELEASED)
        async with self.db.begin() as conn:
            await conn.execute(
                reservations.update()
                .where(reservations.c.id == res.id, reservations.c.status == HELD)
                .values(status=after, updated_ms=now)
            )
            status = await conn.scalar(sa.select(reservations.c.status).where(reservations.c.id == res.id))
        return str(status)

    async def expire(self, reservation_ids: Sequence[str], now: int) -> dict[str, str]:
        """Mark due holds expired; returns the status of each id that has a row."""
        ids = list(reservation_ids)
        async with self.db.begin() as conn:
            await conn.execute(
                reservations.update()
                .where(
                    reservations.c.id.in_(ids),
                    reservations.c.status == HELD,
                    reservations.c.expires_ms <= now,
                )
                .values(status=EXPIRED, updated_ms=now)
            )
            rows = await conn.execute(
                sa.select(reservations.c.id, reservations.c.status).where(reservations.c.id.in_(ids))
            )
            return {row.id: row.status for row in rows}

    async def void(self, sale_id: str, hold: DueHold, now: int) -> str:
        """Fence out a hold with no row; returns ``void``, or the status of a row that won."""
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    reservations.insert().values(
                        id=hold.reservation_id,
                        sale_id=sale_id,
                        user_id=hold.user_id,
                        quantity=hold.quantity,
                        status=VOID,
                        source="api",
                        idem_key=None,
                        expires_ms=now,
                        created_ms=now,
                        updated_ms=now,
                    )
                )
        except IntegrityError:
            existing = await self.get(hold.reservation_id)
            if existing is None:
                raise
            return existing.status
        return VOID

    async def snapshot(self, sale: Sale) -> Snapshot | None:
        """Bump the sale's generation, then read its reservations (None: no such sale).

        Recorders hold the sale row's lock, so holds of the old generation were either
        committed before the bump (and are read here) or are refused after it.
        """
        bump = (
            sales.update()
            .where(sales.c.id == sale.id)
            .values(generation=sales.c.generation + 1)
            .returning(sales.c.generation)
        )
        query = sa.select(reservations).where(
            reservations.c.sale_id == sale.id, reservations.c.status != VOID
        )
        async with self.db.begin() as conn:
            generation = (await conn.execute(bump)).scalar_one_or_none()
            if generation is None:
                return None
            rows = (await conn.execute(query)).all()
        holds = [
            Hold(row.id, row.user_id, row.quantity, row.expires_ms if row.status == HELD else None)
            for row in rows
            if row.status in LIVE_STATUSES
        ]
        keys = [
            KeyRecord(row.user_id, row.idem_key, row.id, row.created_ms)
            for row in rows
            if row.idem_key is not None
        ]
        return Snapshot(sale.id, generation, sale.terms(), holds, keys)

    async def live_units(self, sale_id: str) -> int:
        """Units SQL says are out of stock (held or confirmed)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(reservations.c.quantity), 0)).where(
            reservations.c.sale_id == sale_id, reservations.c.status.in_(LIVE_STATUSES)
        )
        async with self.db.begin() as conn:
            return int(await conn.scalar(query) or 0)

    async def held_count(self, sale_id: str) -> int:
        query = sa.select(sa.func.count()).where(
            reservations.c.sale_id == sale_id, reservations.c.status == HELD
        )
        async with self.db.begin() as conn:
            return int(await conn.scalar(query) or 0)

    async def orders_of(self, user_id: str, *, limit: int) -> list[Order]:
        query = (
            orders.select()
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.created_ms.desc(), orders.c.id)
            .limit(limit)
        )
        async with self.db.begin() as conn:
            return [Order.from_row(row._mapping) for row in await conn.execute(query)]


def _order_values(order: Order) -> dict[str, object]:
    return {
        "id": order.id,
        "reservation_id": order.reservation_id,
        "sale_id": order.sale_id,
        "user_id": order.user_id,
        "product_id": order.product_id,
        "product_title": order.product_title,
        "quantity": order.quantity,
        "price_cents": order.price_cents,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "source": order.source,
        "room_id": order.room_id,
        "created_ms": order.created_ms,
    }
