"""Room state shared by every process: moderation in force, live totals, presence.

Two implementations keep the same guarantees (tests/test_rooms_state.py runs one
suite against both): :class:`~rooms.live.memory_state.MemoryRoomState` for the
embedded single process, :class:`~rooms.live.redis_state.RedisRoomState` for a
cluster.

* Enforcement state (status, pin, slow mode, mutes, bans) is a cache of SQL, loaded
  through the ``loader`` on first use; writers update SQL first and the state second,
  so a reload never loses a change.
* A comment's admission (ban, mute, slow mode, the per-user token bucket) is decided
  in one atomic step, so every process agrees on it.
* Presence is per process: each reports how many subscribers it holds in a room, and
  a report counts until ``ttl_ms`` after it was made. A crashed process therefore
  drops out of the count within that bound; nothing relies on a "leave" message.
* Counters are aggregates (one increment per flush, one set member per user), never a
  row per like.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from realtime.errors import ProtocolError

from .records import Audience, Control, RoomStatus, RoomView, Verdict

#: Reads a room's enforcement state from SQL; None when the room does not exist.
ControlLoader = Callable[[str], Awaitable[Control | None]]


class RoomState(abc.ABC):
    """See the module docstring for the guarantees."""

    def __init__(self, loader: ControlLoader) -> None:
        self._loader = loader

    async def _load_control(self, room_id: str) -> Control:
        control = await self._loader(room_id)
        if control is None:
            raise ProtocolError("not_found", f"no room {room_id}")
        return control

    # --- enforcement --------------------------------------------------------------

    @abc.abstractmethod
    async def admit_comment(
        self, room_id: str, user_id: str, *, is_host: bool, rate_per_s: float, burst: int
    ) -> Verdict:
        """Decide whether ``user_id`` may comment now, and if so spend one token.

        The host is never muted, banned or slowed, only rate limited.
        """

    @abc.abstractmethod
    async def is_banned(self, room_id: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    async def set_status(self, room_id: str, status: RoomStatus) -> None: ...

    @abc.abstractmethod
    async def set_pin(self, room_id: str, product_id: str | None) -> None: ...

    @abc.abstractmethod
    async def set_slow_mode(self, room_id: str, seconds: int) -> None: ...

    @abc.abstractmethod
    async def set_mute(self, room_id: str, user_id: str, until_ms: int | None) -> None:
        """Mute until epoch ms ``until_ms`` (0: until unmuted); None lifts the mute."""

    @abc.abstractmethod
    async def set_ban(self, room_id: str, user_id: str, banned: bool) -> None:
        """A ban also mutes; lifting it lifts the mute too."""

    # --- what subscribers see -----------------------------------------------------

    @abc.abstractmethod
    async def view(self, room_id: str, comments: int) -> RoomView:
        """Status, pin, totals, viewer count and the last ``comments`` comments."""

    @abc.abstractmethod
    async def push_comment(self, room_id: str, comment: Mapping[str, Any], keep: int) -> None:
        """Remember a published comment (with its ``off``) for snapshots; keep the last ``keep``."""

    @abc.abstractmethod
    async def drop_comment(self, room_id: str, off: int) -> None:
        """Remove a deleted comment from the snapshot's list, even if it is pushed later."""

    # --- aggregates ---------------------------------------------------------------

    @abc.abstractmethod
    async def add_likes(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Add each room's likes; returns the new cluster-wide total of each room counted.

        A room missing from the answer was not counted (its Redis master was away): the
        caller keeps its likes for the next flush.
        """

    @abc.abstractmethod
    async def record_activity(
        self,
        *,
        comments: Mapping[str, int],
        viewers: Mapping[str, Collection[str]],
        interacting: Mapping[str, Collection[str]],
    ) -> set[str]:
        """Add comment counts and remember who watched and who took part, per room.

        Returns the rooms whose updates were not recorded (their Redis master was away):
        the caller keeps what it had for them for the next flush.
        """

    @abc.abstractmethod
    async def report_presence(
        self, process: str, counts: Mapping[str, int], *, ttl_ms: int, interval_ms: int
    ) -> dict[str, int]:
        """Record this process's subscriber count per room (0 withdraws it).

        Returns the rooms whose cluster-wide count changed since it was last announced,
        at most once per ``interval_ms`` per room across the cluster: the caller
        publishes ``viewers {count}`` for exactly those.
        """

    @abc.abstractmethod
    async def audience(self, room_id: str) -> Audience: ...

    async def persist(self) -> None:
        """Write what only this process holds to durable storage (embedded mode)."""

    async def forget(self, room_id: str) -> None:
        """The room ended: drop state that only served posting (rate buckets)."""
