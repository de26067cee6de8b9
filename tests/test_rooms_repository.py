"""The room tables and their statements, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from realtime.storage import Database, migrate
from rooms.live import LiveRooms
from rooms.live.directory import RoomDirectory
from rooms.live.repository import RoomRepository, parse_room_id


@pytest.fixture
async def repository(database_url: str) -> AsyncIterator[RoomRepository]:
    assert LiveRooms.migrations is not None
    await migrate(database_url, [LiveRooms.migrations])
    db = Database(database_url)
    try:
        yield RoomRepository(db)
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("7", 7), ("2147483647", 2**31 - 1), ("0", None), ("-1", None), ("2147483648", None), ("7a", None),
     ("", None), ("٣", None), (" 7", None)],
)  # fmt: skip
def test_room_ids_are_positive_integers_that_fit_a_column(raw: str, parsed: int | None) -> None:
    assert parse_room_id(raw) == parsed


async def test_a_room_is_created_offline_and_read_back(repository: RoomRepository) -> None:
    room = await repository.create("Tea tasting", "host-1")
    again = await repository.get(room.id)
    assert again == room
    assert (room.status, room.host_id, room.title) == ("offline", "host-1", "Tea tasting")
    assert room.created_at.tzinfo is not None
    assert await repository.get("999999") is None
    assert await repository.get("nope") is None


async def test_status_changes_stop_at_ended(repository: RoomRepository) -> None:
    room = await repository.create("Once", "h")
    assert await repository.set_status(room.id, "live")
    assert not await repository.set_status(room.id, "live")  # no change, no event
    assert await repository.set_status(room.id, "ended")
    assert not await repository.set_status(room.id, "offline")
    stored = await repository.get(room.id)
    assert stored is not None and stored.status == "ended"


async def test_moderation_rows_come_and_go(repository: RoomRepository) -> None:
    room = (await repository.create("Moderated", "h")).id
    soon = int(time.time() * 1000) + 60_000
    await repository.mute(room, "timed", soon)
    await repository.mute(room, "gone", 1)  # already expired
    await repository.ban(room, "banned")
    await repository.mute(room, "forever", 0)
    await repository.set_slow_mode(room, 5)
    await repository.set_pin(room, "p-1")
    control = await repository.control(room)
    assert control is not None
    assert control.muted == {"timed": soon, "banned": 0, "forever": 0}
    assert control.banned == {"banned"}
    assert (control.slow_mode_s, control.pinned_product_id) == (5, "p-1")

    await repository.mute(room, "timed", soon + 1)  # a second mute replaces the first
    await repository.unmute(room, "forever")
    await repository.unban(room, "banned")
    control = await repository.control(room)
    assert control is not None
    assert control.muted == {"timed": soon + 1}
    assert control.banned == frozenset()
    assert await repository.control("424242") is None


async def test_embedded_totals_round_trip(repository: RoomRepository) -> None:
    room = (await repository.create("Counted", "h")).id
    empty = await repository.load_totals(room)
    assert (empty.likes, empty.comments, empty.peak_viewers, empty.viewer_ids) == (0, 0, 0, frozenset())
    await repository.save_totals(
        room, likes=10, comments=3, peak_viewers=4, new_viewers=["a", "b"], new_interacting=["b"]
    )
    await repository.save_totals(
        room, likes=12, comments=3, peak_viewers=4, new_viewers=["c"], new_interacting=["a"]
    )
    totals = await repository.load_totals(room)
    assert (totals.likes, totals.comments, totals.peak_viewers) == (12, 3, 4)
    assert totals.viewer_ids == {"a", "b", "c"}
    assert totals.interacting_ids == {"a", "b"}


async def test_a_storm_of_lookups_for_one_room_makes_one_query(repository: RoomRepository) -> None:
    """Thousands of viewers reconnecting at once must not exhaust the SQL pool."""
    room = await repository.create("storm", "host")
    queries = 0
    real_get = repository.get

    async def counting_get(room_id: str):  # type: ignore[no-untyped-def]
        nonlocal queries
        queries += 1
        await asyncio.sleep(0.05)
        return await real_get(room_id)

    repository.get = counting_get  # type: ignore[method-assign]
    directory = RoomDirectory(repository, ttl_s=0.0)
    found = await asyncio.gather(*(directory.get(room.id) for _ in range(500)))
    assert queries == 1 and {r.id for r in found} == {room.id}
