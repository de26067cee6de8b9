"""Viewer counts: each process reports its subscribers per room, with an expiry.

Every ``interval`` this process reports, for every room it has subscribers in, how
many it holds; the report counts for ``ttl`` and is refreshed long before that. A
process that dies stops refreshing, so its viewers leave the cluster-wide count at
most ``ttl`` (+ one interval) later, with no "leave" message needed. The shared
state decides which rooms' totals changed and announces each at most once per
interval cluster-wide; this process then publishes ``viewers {count}`` for those.
"""

from __future__ import annotations

import asyncio
import logging

from realtime.node import Node

from .state import RoomState

log = logging.getLogger("livemart.rooms")

PREFIX = "room:"


class PresenceReporter:
    def __init__(
        self, state: RoomState, node: Node, *, process_id: str, ttl_s: float, interval_s: float
    ) -> None:
        self._state = state
        self._node = node
        self.process_id = process_id
        self._ttl_ms = int(ttl_s * 1000)
        self._interval_ms = int(interval_s * 1000)
        #: Rooms this process last reported a non-zero count for.
        self._reported: set[str] = set()

    def local_counts(self) -> dict[str, int]:
        hub = self._node.hub
        return {
            channel[len(PREFIX) :]: hub.subscriber_count(channel)
            for channel in list(hub.channels())
            if channel.startswith(PREFIX)
        }

    async def tick(self) -> None:
        counts = self.local_counts()
        for room_id in self._reported - counts.keys():
            counts[room_id] = 0
        announce = await self._state.report_presence(
            self.process_id, counts, ttl_ms=self._ttl_ms, interval_ms=self._interval_ms
        )
        self._reported = {room_id for room_id, count in counts.items() if count > 0}
        results = await asyncio.gather(
            *(
                self._node.publish(f"{PREFIX}{room_id}", "viewers", {"count": total}, ephemeral=True)
                for room_id, total in announce.items()
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("viewers push failed: %s", result)

    async def withdraw(self) -> None:
        """On a graceful stop: take this process's viewers out of every count now."""
        if self._reported:
            counts = dict.fromkeys(self._reported, 0)
            self._reported = set()
            await self._state.report_presence(
                self.process_id, counts, ttl_ms=self._ttl_ms, interval_ms=self._interval_ms
            )
