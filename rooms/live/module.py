"""The live-rooms Module: wires the parts together and is what other domains call."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from realtime.broker import HistoryPolicy
from realtime.errors import ProtocolError
from realtime.server import Core

from ..catalog import ProductCatalog
from .activity import Activity
from .comments import CommentPoster
from .directory import RoomDirectory
from .media_access import RoomMediaAccess
from .memory_state import MemoryRoomState
from .metrics import RoomMetrics
from .moderation import Moderator
from .namespace import RoomNamespace
from .ops import RoomOps, room_id_of
from .periodic import Periodic
from .presence import PresenceReporter
from .records import Audience, Room
from .redis_state import RedisRoomState
from .repository import RoomRepository
from .routes import RoomRoutes
from .service import RoomService, channel
from .settings import RoomSettings
from .state import RoomState

if TYPE_CHECKING:
    from ..media.access import MediaAccess

log = logging.getLogger("livemart.rooms")

#: Bound on the final flush when the process stops.
STOP_FLUSH_TIMEOUT_S = 5.0


class LiveRooms:
    """Live rooms: comments, likes, viewers, pins, moderation, recovery."""

    migrations: Path | None = Path(__file__).with_name("migrations") / "versions"

    def __init__(self, core: Core, *, catalog: ProductCatalog, settings: RoomSettings) -> None:
        self.settings = settings
        self._core = core
        metrics = RoomMetrics(core.metrics.registry)
        repository = RoomRepository(core.db)
        directory = RoomDirectory(repository, ttl_s=settings.room_cache_ttl_s)
        self.state: RoomState = (
            MemoryRoomState(repository.control, repository)
            if core.redis is None
            else RedisRoomState(
                repository.control, core.redis, core.redis_key, connections=core.redis_connections
            )
        )
        self._activity = Activity(self.state, core.node)
        self.service = RoomService(
            node=core.node,
            directory=directory,
            state=self.state,
            activity=self._activity,
            catalog=catalog,
            settings=settings,
            metrics=metrics,
        )
        comments = CommentPoster(
            node=core.node,
            directory=directory,
            state=self.state,
            activity=self._activity,
            settings=settings,
            metrics=metrics,
        )
        moderator = Moderator(node=core.node, directory=directory, state=self.state, metrics=metrics)
        self._presence = PresenceReporter(
            self.state,
            core.node,
            process_id=secrets.token_hex(6),
            ttl_s=settings.presence_ttl_s,
            interval_s=settings.viewers_interval_s,
        )
        core.node.add_namespace(
            RoomNamespace(
                core.broker,
                self.service,
                history=HistoryPolicy(core.settings.history_size, core.settings.history_ttl_s),
                comment_budget_per_s=settings.comment_budget_per_s,
            )
        )
        RoomOps(self.service, comments, moderator).register(core.node)
        self._routes = RoomRoutes(self.service, title_max_len=settings.title_max_len)
        self._jobs = [
            Periodic("room-activity-flush", settings.like_flush_interval_s, self._activity.flush),
            Periodic("room-presence", settings.viewers_interval_s, self._presence.tick),
        ]
        if core.redis is None:
            self._jobs.append(Periodic("room-persist", settings.persist_interval_s, self.state.persist))

    # --- Module -------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return self._routes.routes()

    async def start(self) -> None:
        for job in self._jobs:
            job.start()

    async def stop(self) -> None:
        """Stop the jobs, then flush likes, withdraw presence and persist, within a bound."""
        for job in self._jobs:
            await job.stop()
        try:
            async with asyncio.timeout(STOP_FLUSH_TIMEOUT_S):
                await self._activity.flush()
                await self._presence.withdraw()
                await self.state.persist()
        except Exception:
            log.exception("final flush of room state failed; recent likes or counts may be lost")

    # --- for other domains --------------------------------------------------------

    async def room(self, room_id: str) -> Room | None:
        """The room's record (status at most ``room_cache_ttl_s`` old), or None."""
        try:
            key = room_id_of(room_id)
        except ProtocolError:
            return None
        return await self.service.directory.find(key)

    async def audience(self, room_id: str) -> Audience:
        """Peak and unique viewers, interacting users, comment and like totals."""
        await self.service.directory.get(room_id_of(room_id))
        return await self.state.audience(room_id)

    async def publish_room_event(self, room_id: str, event: str, data: dict[str, Any]) -> int:
        """Publish a priority event with history on ``room:<id>``; returns its offset."""
        position = await self._core.node.publish(channel(room_id), event, data)
        return position.offset

    def media_access(self) -> MediaAccess:
        return RoomMediaAccess(self.service)

    def on_room_end(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener(room_id)`` when a room is ended through this process."""
        self.service.end_listeners.append(listener)
