"""Likes and audience counters, aggregated per process and flushed once per tick.

A like costs no I/O on the command path: it adds to a per-room number here. Each
tick adds every room's sum to the shared total in one round trip and publishes the
new total as an ephemeral ``likes {total}``, so a room with 10,000 likes a second
still pushes at most one likes event per process per tick. Comment counts and the
sets of watching and interacting users are flushed the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from realtime.node import Node

from .state import RoomState

log = logging.getLogger("livemart.rooms")


class Activity:
    def __init__(self, state: RoomState, node: Node) -> None:
        self._state = state
        self._node = node
        self._likes: defaultdict[str, int] = defaultdict(int)
        self._comments: defaultdict[str, int] = defaultdict(int)
        self._viewers: defaultdict[str, set[str]] = defaultdict(set)
        self._interacting: defaultdict[str, set[str]] = defaultdict(set)

    def like(self, room_id: str, user_id: str, count: int) -> None:
        self._likes[room_id] += count
        self._interacting[room_id].add(user_id)

    def comment(self, room_id: str, user_id: str) -> None:
        self._comments[room_id] += 1
        self._interacting[room_id].add(user_id)

    def viewer(self, room_id: str, user_id: str) -> None:
        self._viewers[room_id].add(user_id)

    async def flush(self) -> None:
        """Send what accumulated; on failure keep it for the next tick."""
        likes, self._likes = self._likes, defaultdict(int)
        comments, self._comments = self._comments, defaultdict(int)
        viewers, self._viewers = self._viewers, defaultdict(set)
        interacting, self._interacting = self._interacting, defaultdict(set)
        try:
            missed = await self._state.record_activity(
                comments=comments, viewers=viewers, interacting=interacting
            )
        except BaseException:
            self._restore(likes, comments, viewers, interacting)
            raise
        if missed:  # rooms whose Redis master was away: only theirs go again
            self._restore(
                {},
                {room_id: comments[room_id] for room_id in missed if room_id in comments},
                {room_id: viewers[room_id] for room_id in missed if room_id in viewers},
                {room_id: interacting[room_id] for room_id in missed if room_id in interacting},
            )
        try:
            totals = await self._state.add_likes(likes)
        except BaseException:
            self._restore(likes, {}, {}, {})
            raise
        self._restore({room_id: n for room_id, n in likes.items() if room_id not in totals}, {}, {}, {})
        if totals:
            results = await asyncio.gather(
                *(
                    self._node.publish(f"room:{room_id}", "likes", {"total": total}, ephemeral=True)
                    for room_id, total in totals.items()
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("likes push failed: %s", result)

    def _restore(
        self,
        likes: dict[str, int],
        comments: dict[str, int],
        viewers: dict[str, set[str]],
        interacting: dict[str, set[str]],
    ) -> None:
        for room_id, count in likes.items():
            self._likes[room_id] += count
        for room_id, count in comments.items():
            self._comments[room_id] += count
        for room_id, users in viewers.items():
            self._viewers[room_id] |= users
        for room_id, users in interacting.items():
            self._interacting[room_id] |= users
