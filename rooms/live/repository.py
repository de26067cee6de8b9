"""SQL access for rooms: the durable record, moderation, and embedded-mode totals."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from realtime.storage import Database

from . import models
from .records import Control, Room, RoomStatus

#: Largest id a room may have (PostgreSQL INTEGER).
MAX_ROOM_ID = 2**31 - 1


def parse_room_id(room_id: str) -> int | None:
    """The integer key behind a room id, or None if it cannot name a room."""
    if not room_id.isascii() or not room_id.isdigit() or len(room_id) > 10:
        return None
    value = int(room_id)
    return value if 0 < value <= MAX_ROOM_ID else None


@dataclass(frozen=True, slots=True)
class StoredTotals:
    """Embedded mode's persisted room totals."""

    likes: int
    comments: int
    peak_viewers: int
    viewer_ids: frozenset[str]
    interacting_ids: frozenset[str]


class RoomRepository:
    """Every SQL statement of the live-room domain."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL)."""
        return (postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert)(table)

    # --- rooms --------------------------------------------------------------------

    async def create(self, title: str, host_id: str) -> Room:
        now = datetime.now(UTC)
        async with self.db.begin() as conn:
            result = await conn.execute(
                models.rooms.insert()
                .values(title=title, host_id=host_id, status="offline", created_at=now)
                .returning(models.rooms.c.id)
            )
            key = result.scalar_one()
        return Room(str(key), title, host_id, "offline", now)

    async def get(self, room_id: str) -> Room | None:
        key = parse_room_id(room_id)
        if key is None:
            return None
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(models.rooms).where(models.rooms.c.id == key))).first()
        return None if row is None else _room(row)

    async def set_status(self, room_id: str, status: RoomStatus) -> bool:
        """Change the status unless the room has ended; True if a row changed."""
        key = parse_room_id(room_id)
        if key is None:
            return False
        values: dict[str, Any] = {"status": status}
        if status == "ended":
            values["ended_at"] = datetime.now(UTC)
        async with self.db.begin() as conn:
            result = await conn.execute(
                models.rooms.update()
                .where(models.rooms.c.id == key, models.rooms.c.status != "ended")
                .where(models.rooms.c.status != status)
                .values(**values)
            )
        return result.rowcount > 0

    async def set_pin(self, room_id: str, product_id: str | None) -> None:
        await self._update_room(room_id, pinned_product_id=product_id)

    async def set_slow_mode(self, room_id: str, seconds: int) -> None:
        await self._update_room(room_id, slow_mode_s=seconds)

    async def _update_room(self, room_id: str, **values: Any) -> None:
        key = parse_room_id(room_id)
        if key is None:
            return
        async with self.db.begin() as conn:
            await conn.execute(models.rooms.update().where(models.rooms.c.id == key).values(**values))

    # --- moderation ---------------------------------------------------------------

    async def mute(self, room_id: str, user_id: str, until_ms: int) -> None:
        await self._upsert_moderation(room_id, user_id, muted_until_ms=until_ms)

    async def ban(self, room_id: str, user_id: str) -> None:
        await self._upsert_moderation(room_id, user_id, muted_until_ms=0, banned=True)

    async def unmute(self, room_id: str, user_id: str) -> None:
        await self._clear_moderation(room_id, user_id, muted_until_ms=None)

    async def unban(self, room_id: str, user_id: str) -> None:
        await self._clear_moderation(room_id, user_id, muted_until_ms=None, banned=False)

    async def _upsert_moderation(self, room_id: str, user_id: str, **values: Any) -> None:
        key = _key(room_id)
        statement = self._insert(models.moderation).values(room_id=key, user_id=user_id, **values)
        statement = statement.on_conflict_do_update(index_elements=["room_id", "user_id"], set_=values)
        async with self.db.begin() as conn:
            await conn.execute(statement)

    async def _clear_moderation(self, room_id: str, user_id: str, **values: Any) -> None:
        """Lift a mute or ban; a row with nothing left in force is deleted."""
        key = _key(room_id)
        table = models.moderation
        mine = (table.c.room_id == key) & (table.c.user_id == user_id)
        async with self.db.begin() as conn:
            await conn.execute(table.update().where(mine).values(**values))
            await conn.execute(
                table.delete().where(mine, table.c.muted_until_ms.is_(None), table.c.banned.is_(False))
            )

    async def control(self, room_id: str) -> Control | None:
        """What every process must enforce for the room, or None if there is no room."""
        key = parse_room_id(room_id)
        if key is None:
            return None
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(models.rooms).where(models.rooms.c.id == key))).first()
            if row is None:
                return None
            table = models.moderation
            rows = (await conn.execute(sa.select(table).where(table.c.room_id == key))).all()
        muted = {
            r.user_id: r.muted_until_ms
            for r in rows
            if r.muted_until_ms is not None and (r.muted_until_ms == 0 or r.muted_until_ms > now_ms)
        }
        return Control(
            status=row.status,
            pinned_product_id=row.pinned_product_id,
            slow_mode_s=row.slow_mode_s,
            muted=muted,
            banned=frozenset(r.user_id for r in rows if r.banned),
        )

    # --- embedded-mode totals -----------------------------------------------------

    async def load_totals(self, room_id: str) -> StoredTotals:
        key = _key(room_id)
        async with self.db.begin() as conn:
            row = (
                await conn.execute(sa.select(models.counters).where(models.counters.c.room_id == key))
            ).first()
            table = models.audience
            people = (await conn.execute(sa.select(table).where(table.c.room_id == key))).all()
        return StoredTotals(
            likes=0 if row is None else row.likes,
            comments=0 if row is None else row.comments,
            peak_viewers=0 if row is None else row.peak_viewers,
            viewer_ids=frozenset(p.user_id for p in people if p.viewed),
            interacting_ids=frozenset(p.user_id for p in people if p.interacted),
        )

    async def save_totals(
        self,
        room_id: str,
        *,
        likes: int,
        comments: int,
        peak_viewers: int,
        new_viewers: Iterable[str],
        new_interacting: Iterable[str],
    ) -> None:
        key = _key(room_id)
        totals = {"likes": likes, "comments": comments, "peak_viewers": peak_viewers}
        async with self.db.begin() as conn:
            await conn.execute(
                self._insert(models.counters)
                .values(room_id=key, **totals)
                .on_conflict_do_update(index_elements=["room_id"], set_=totals)
            )
            await self._mark(conn, key, new_viewers, "viewed")
            await self._mark(conn, key, new_interacting, "interacted")

    async def _mark(self, conn: AsyncConnection, key: int, users: Iterable[str], column: str) -> None:
        rows = [{"room_id": key, "user_id": user, column: True} for user in users]
        if rows:
            statement = self._insert(models.audience).on_conflict_do_update(
                index_elements=["room_id", "user_id"], set_={column: True}
            )
            await conn.execute(statement, rows)


def _key(room_id: str) -> int:
    key = parse_room_id(room_id)
    if key is None:
        raise ValueError(f"not a room id: {room_id!r}")
    return key


def _room(row: Any) -> Room:
    created = row.created_at
    if created.tzinfo is None:  # SQLite hands back naive datetimes
        created = created.replace(tzinfo=UTC)
    return Room(str(row.id), row.title, row.host_id, row.status, created)
