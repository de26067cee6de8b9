"""Room records: created and changed in SQL, read through a short per-process cache.

Title and host never change, so the cache can only be stale about ``status``, and for
at most ``ttl_s``. Anything that must agree across processes at once (whether a
comment is allowed) reads the shared state instead.
"""

from __future__ import annotations

import asyncio
import time

from realtime.errors import ProtocolError

from .records import Room, RoomStatus
from .repository import RoomRepository

#: Cached rooms at most; the oldest entries go first beyond it.
CACHE_LIMIT = 10_000


class RoomDirectory:
    def __init__(self, repository: RoomRepository, *, ttl_s: float) -> None:
        self.repository = repository
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Room]] = {}
        #: Lookups in flight, shared by everyone asking for the same room meanwhile: a
        #: reconnect storm of thousands of viewers makes one query, not thousands.
        self._loading: dict[str, asyncio.Future[Room | None]] = {}

    async def create(self, title: str, host_id: str) -> Room:
        room = await self.repository.create(title, host_id)
        self._remember(room)
        return room

    async def find(self, room_id: str) -> Room | None:
        cached = self._cache.get(room_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        loading = self._loading.get(room_id)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = self._loading[room_id] = asyncio.get_running_loop().create_future()
        try:
            room = await self.repository.get(room_id)
        except asyncio.CancelledError:
            loading.cancel()
            raise
        except Exception as exc:
            loading.set_exception(exc)
            loading.exception()  # marked as retrieved; waiters re-raise it themselves
            raise
        finally:
            del self._loading[room_id]
        if room is None:
            self._cache.pop(room_id, None)
        else:
            self._remember(room)
        loading.set_result(room)
        return room

    async def get(self, room_id: str) -> Room:
        """The room, or ``not_found``."""
        room = await self.find(room_id)
        if room is None:
            raise ProtocolError("not_found", f"no room {room_id[:20]}")
        return room

    async def set_status(self, room_id: str, status: RoomStatus) -> bool:
        """Change the status in SQL (never out of "ended"); True if it changed."""
        changed = await self.repository.set_status(room_id, status)
        self._cache.pop(room_id, None)
        return changed

    def _remember(self, room: Room) -> None:
        self._cache.pop(room.id, None)
        if len(self._cache) >= CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]
        self._cache[room.id] = (time.monotonic(), room)
