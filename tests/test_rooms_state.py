"""One contract suite for the room state: in-process (embedded) and Redis (cluster).

Both must behave identically: admission (ban, mute, slow mode, token bucket), control
loaded from SQL, snapshot views, aggregated counters and TTL presence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from realtime.errors import ProtocolError
from realtime.redis_client import connect
from realtime.resp import RespClients
from realtime.storage import Database, migrate
from rooms.live import LiveRooms
from rooms.live.activity import Activity
from rooms.live.memory_state import MemoryRoomState
from rooms.live.records import Verdict
from rooms.live.redis_state import RedisRoomState
from rooms.live.repository import RoomRepository
from rooms.live.state import RoomState
from tests.conftest import redis_under_test


async def admit(
    state: RoomState, room: str, user: str, *, host: bool = False, rate: float = 1.0, burst: int = 3
) -> Verdict:
    return await state.admit_comment(room, user, is_host=host, rate_per_s=rate, burst=burst)


@dataclass
class Setup:
    state: RoomState
    repository: RoomRepository
    room: str
    host: str = "host-1"


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[RoomRepository]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}"
    assert LiveRooms.migrations is not None
    await migrate(url, [LiveRooms.migrations])
    db = Database(url)
    try:
        yield RoomRepository(db)
    finally:
        await db.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def setup(request: pytest.FixtureRequest, repository: RoomRepository) -> AsyncIterator[Setup]:
    """Every room state in turn: in-process, one Redis, and a three-master Redis Cluster."""
    room = await repository.create("Spring drop", "host-1")
    if request.param == "memory":
        yield Setup(MemoryRoomState(repository.control, repository), repository, room.id)
        return
    url, prefix = redis_under_test(request, request.param)
    client, connections = connect(url), RespClients()
    try:
        state = RedisRoomState(
            repository.control, client, lambda tag, name: f"{prefix}{{{tag}}}:{name}", connections=connections
        )
        yield Setup(state, repository, room.id)
    finally:
        await connections.aclose()
        await client.aclose()


async def test_comments_are_admitted_until_the_burst_is_spent(setup: Setup) -> None:
    state, room = setup.state, setup.room
    verdicts = [await admit(state, room, "u1") for _ in range(4)]
    assert [v.refusal for v in verdicts] == [None, None, None, "rate"]
    assert 0 < verdicts[3].wait_ms <= 1000
    # Buckets are per user: someone else is unaffected.
    assert (await admit(state, room, "u2")).allowed


async def test_tokens_come_back_at_the_configured_rate(setup: Setup) -> None:
    state, room = setup.state, setup.room
    assert (await admit(state, room, "u1", rate=20.0, burst=1)).allowed
    assert (await admit(state, room, "u1", rate=20.0, burst=1)).refusal == "rate"
    await asyncio.sleep(0.08)
    assert (await admit(state, room, "u1", rate=20.0, burst=1)).allowed


async def test_mute_ban_and_their_lifting(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.set_mute(room, "u1", 0)
    await state.set_ban(room, "u2", True)
    assert (await admit(state, room, "u1")).refusal == "muted"
    assert (await admit(state, room, "u2")).refusal == "banned"
    assert await state.is_banned(room, "u2")
    assert not await state.is_banned(room, "u1")
    await state.set_mute(room, "u1", None)
    await state.set_ban(room, "u2", False)
    assert (await admit(state, room, "u1")).allowed
    assert (await admit(state, room, "u2")).allowed
    assert not await state.is_banned(room, "u2")


async def test_a_timed_mute_expires(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.set_mute(room, "u1", int(time.time() * 1000) + 300)
    verdict = await admit(state, room, "u1")
    assert verdict.refusal == "muted"
    assert 0 < verdict.wait_ms <= 300
    await asyncio.sleep(0.35)
    assert (await admit(state, room, "u1")).allowed


async def test_slow_mode_spaces_a_users_comments_but_not_the_hosts(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.set_slow_mode(room, 1)
    assert (await admit(state, room, "u1")).allowed
    verdict = await admit(state, room, "u1")
    assert verdict.refusal == "slow"
    assert 0 < verdict.wait_ms <= 1000
    assert (await admit(state, room, "host-1", host=True)).allowed
    assert (await admit(state, room, "host-1", host=True)).allowed
    await state.set_slow_mode(room, 0)
    assert (await admit(state, room, "u1")).allowed


async def test_the_host_is_never_muted_but_is_rate_limited(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.set_mute(room, "host-1", 0)
    verdicts = [await admit(state, room, "host-1", host=True) for _ in range(4)]
    assert [v.refusal for v in verdicts] == [None, None, None, "rate"]


async def test_an_ended_room_takes_no_comments(setup: Setup) -> None:
    await setup.state.set_status(setup.room, "ended")
    verdict = await admit(setup.state, setup.room, "u1")
    assert verdict.refusal == "ended"


async def test_enforcement_is_loaded_from_sql_on_first_use(setup: Setup) -> None:
    repo, room = setup.repository, setup.room
    await repo.ban(room, "u9")
    await repo.mute(room, "u8", 0)
    await repo.set_slow_mode(room, 7)
    await repo.set_pin(room, "p-1")
    assert await setup.state.is_banned(room, "u9")
    assert (await admit(setup.state, room, "u8")).refusal == "muted"
    view = await setup.state.view(room, 10)
    assert (view.slow_mode_s, view.pinned_product_id, view.status) == (7, "p-1", "offline")


async def test_unknown_rooms_are_not_found(setup: Setup) -> None:
    with pytest.raises(ProtocolError) as caught:
        await admit(setup.state, "999", "u1")
    assert caught.value.code == "not_found"


async def test_view_has_the_last_comments_oldest_first_without_deleted_ones(setup: Setup) -> None:
    state, room = setup.state, setup.room
    # Recorded out of order, as concurrent posts may be; the 4 recorded last are kept.
    for off in (3, 1, 2, 6, 5):
        await state.push_comment(room, {"off": off, "text": f"c{off}"}, keep=4)
    await state.drop_comment(room, 5)
    view = await state.view(room, 10)
    assert [c["off"] for c in view.comments] == [1, 2, 6]
    assert [c["text"] for c in (await state.view(room, 2)).comments] == ["c2", "c6"]
    assert (await state.view(room, 0)).comments == []


async def test_a_comment_deleted_before_it_is_recorded_stays_deleted(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.drop_comment(room, 8)  # the delete won the race against the record
    await state.push_comment(room, {"off": 8, "text": "late"}, keep=4)
    await state.push_comment(room, {"off": 9, "text": "kept"}, keep=4)
    assert [c["off"] for c in (await state.view(room, 10)).comments] == [9]


async def test_pin_and_status_show_in_the_view(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.set_pin(room, "p-7")
    await state.set_status(room, "live")
    view = await state.view(room, 0)
    assert (view.pinned_product_id, view.status) == ("p-7", "live")
    await state.set_pin(room, None)
    assert (await state.view(room, 0)).pinned_product_id is None


async def test_likes_add_up_and_report_the_total(setup: Setup) -> None:
    state, room = setup.state, setup.room
    assert await state.add_likes({room: 5}) == {room: 5}
    assert await state.add_likes({room: 7}) == {room: 12}
    assert await state.add_likes({}) == {}
    assert (await state.view(room, 0)).likes == 12


async def test_audience_counts_each_user_once(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.record_activity(comments={room: 3}, viewers={room: {"a", "b"}}, interacting={room: {"a"}})
    await state.record_activity(comments={room: 2}, viewers={room: {"b", "c"}}, interacting={room: {"c"}})
    await state.add_likes({room: 4})
    audience = await state.audience(room)
    assert audience.viewer_ids == {"a", "b", "c"}
    assert audience.interacting_ids == {"a", "c"}
    assert (audience.comments, audience.likes) == (5, 4)


async def test_presence_sums_processes_and_announces_changes_once(setup: Setup) -> None:
    state, room = setup.state, setup.room
    ttl = {"ttl_ms": 10_000, "interval_ms": 200}
    assert await state.report_presence("A", {room: 3}, **ttl) == {room: 3}
    # Within the interval a change is held back, whoever reports it...
    assert await state.report_presence("B", {room: 2}, **ttl) == {}
    assert (await state.view(room, 0)).viewers == 5
    await asyncio.sleep(0.25)
    # ...and announced once afterwards, by the first process to report.
    assert await state.report_presence("A", {room: 3}, **ttl) == {room: 5}
    await asyncio.sleep(0.25)
    assert await state.report_presence("B", {room: 2}, **ttl) == {}  # unchanged: nothing to say
    assert await state.report_presence("B", {room: 0}, **ttl) == {room: 3}
    assert (await state.audience(room)).peak_viewers == 5


async def test_a_process_that_stops_reporting_drops_out_after_the_ttl(setup: Setup) -> None:
    state, room = setup.state, setup.room
    await state.report_presence("crashed", {room: 100}, ttl_ms=300, interval_ms=0)
    await state.report_presence("alive", {room: 4}, ttl_ms=10_000, interval_ms=0)
    assert (await state.view(room, 0)).viewers == 104
    await asyncio.sleep(0.4)
    assert (await state.view(room, 0)).viewers == 4
    assert await state.report_presence("alive", {room: 4}, ttl_ms=10_000, interval_ms=0) == {room: 4}
    assert (await state.audience(room)).peak_viewers == 104


async def test_forget_resets_rate_buckets(setup: Setup) -> None:
    state, room = setup.state, setup.room
    for _ in range(3):
        await admit(state, room, "u1")
    assert not (await admit(state, room, "u1")).allowed
    await state.forget(room)
    assert (await admit(state, room, "u1")).allowed


async def test_memory_totals_survive_a_restart_through_sql(repository: RoomRepository) -> None:
    room = (await repository.create("Restart", "h")).id
    first = MemoryRoomState(repository.control, repository)
    await first.add_likes({room: 41})
    await first.record_activity(comments={room: 2}, viewers={room: {"v"}}, interacting={room: {"i"}})
    await first.report_presence("p", {room: 9}, ttl_ms=1000, interval_ms=0)
    await first.persist()
    second = MemoryRoomState(repository.control, repository)
    assert await second.add_likes({room: 1}) == {room: 42}
    audience = await second.audience(room)
    assert (audience.comments, audience.peak_viewers) == (2, 9)
    assert audience.viewer_ids == {"v"}
    assert audience.interacting_ids == {"i"}


async def test_redis_reloads_enforcement_lost_from_redis(
    repository: RoomRepository, redis_url: str, redis_prefix: str
) -> None:
    room = (await repository.create("Flushed", "h")).id
    client, connections = aioredis.Redis.from_url(redis_url), RespClients()
    try:
        state = RedisRoomState(
            repository.control,
            client,
            lambda tag, name: f"{redis_prefix}{{{tag}}}:{name}",
            connections=connections,
        )
        await repository.ban(room, "u1")
        await state.set_ban(room, "u1", True)
        await client.delete(f"{redis_prefix}{{room:{room}}}:ctl")  # Redis lost it; SQL did not
        assert await state.is_banned(room, "u1")
        assert (await admit(state, room, "u1")).refusal == "banned"
    finally:
        await connections.aclose()
        await client.aclose()


class PartlyAway(MemoryRoomState):
    """A room state that cannot reach one room, as when that room's Redis master is away."""

    away: str | None = None

    async def add_likes(self, counts: Mapping[str, int]) -> dict[str, int]:
        return await super().add_likes({r: n for r, n in counts.items() if r != self.away})

    async def record_activity(
        self,
        *,
        comments: Mapping[str, int],
        viewers: Mapping[str, Collection[str]],
        interacting: Mapping[str, Collection[str]],
    ) -> set[str]:
        def reached(per_room: Mapping[str, Any]) -> dict[str, Any]:
            return {r: v for r, v in per_room.items() if r != self.away}

        await super().record_activity(
            comments=reached(comments), viewers=reached(viewers), interacting=reached(interacting)
        )
        return {r for r in (*comments, *viewers, *interacting) if r == self.away}


class Published:
    def __init__(self) -> None:
        self.pushes: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, event: str, data: dict[str, Any], **options: Any) -> None:
        self.pushes.append((channel, data))


async def test_a_flush_sends_again_only_what_did_not_arrive(repository: RoomRepository) -> None:
    """A Redis Cluster may count one room and not another: only the other goes again."""
    here, there = (await repository.create("Here", "h")).id, (await repository.create("There", "h")).id
    state = PartlyAway(repository.control, repository)
    state.away = there
    activity = Activity(state, Published())  # type: ignore[arg-type]
    for room in (here, there):
        activity.like(room, "u1", 3)
        activity.comment(room, "u2")
    await activity.flush()
    await activity.flush()  # nothing new for `here`; `there` still away
    state.away = None
    await activity.flush()
    for room in (here, there):
        audience = await state.audience(room)
        assert (audience.likes, audience.comments, audience.interacting_ids) == (3, 1, {"u1", "u2"})
