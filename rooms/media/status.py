"""Ordered delivery of stream status changes to the rooms domain."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from .access import StreamStatus

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str, StreamStatus], Awaitable[None]]


class StatusNotifier:
    """Calls back in the background, one room's changes strictly in order.

    Connection-state handlers must not await, yet a fast "live" then "offline" must not
    arrive swapped: each room's delivery waits for the previous one of that room.
    """

    def __init__(self, callback: StatusCallback) -> None:
        self._callback = callback
        self._tails: dict[str, asyncio.Task[None]] = {}

    def notify(self, room_id: str, status: StreamStatus) -> None:
        previous = self._tails.get(room_id)
        task = asyncio.get_running_loop().create_task(self._deliver(room_id, status, previous))
        self._tails[room_id] = task
        task.add_done_callback(partial(self._forget, room_id))

    async def drain(self) -> None:
        """Wait until every change so far has been delivered (or has failed)."""
        while self._tails:
            await asyncio.wait(set(self._tails.values()))

    async def _deliver(self, room_id: str, status: StreamStatus, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self._callback(room_id, status)
        except Exception:
            logger.exception("stream_status_changed(%s, %s) failed", room_id, status)

    def _forget(self, room_id: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(room_id) is task:
            del self._tails[room_id]
