"""Host moderation: mute, unmute, ban, unban, delete a comment, slow mode.

Every change is written to SQL first (so it survives restarts and Redis loss) and
then to the shared state every process enforces from, so it applies on all processes
from the moment the host gets the reply.
"""

from __future__ import annotations

import time
from typing import Literal

from realtime.errors import ProtocolError
from realtime.node import Node

from .directory import RoomDirectory
from .metrics import RoomMetrics
from .state import RoomState

Action = Literal["mute", "unmute", "ban", "unban", "delete_comment", "slow_mode"]
ACTIONS: tuple[Action, ...] = ("mute", "unmute", "ban", "unban", "delete_comment", "slow_mode")

#: Longest timed mute, and the longest slow-mode interval.
MAX_MUTE_S = 30 * 24 * 3600
MAX_SLOW_MODE_S = 3600


class Moderator:
    def __init__(
        self, *, node: Node, directory: RoomDirectory, state: RoomState, metrics: RoomMetrics
    ) -> None:
        self._node = node
        self._directory = directory
        self._state = state
        self._metrics = metrics

    async def apply(
        self,
        host_id: str,
        room_id: str,
        action: Action,
        *,
        user_id: str | None = None,
        seconds: int | None = None,
        off: int | None = None,
    ) -> None:
        """Apply one action by ``host_id``; ``forbidden`` unless they host the room."""
        room = await self._directory.get(room_id)
        if room.host_id != host_id:
            raise ProtocolError("forbidden", "only the room's host may moderate")
        repository = self._directory.repository
        if action == "delete_comment":
            if off is None or off < 1:
                raise ProtocolError("bad_request", "delete_comment needs off, the comment's offset")
            await self._state.drop_comment(room_id, off)
            await self._node.publish(f"room:{room_id}", "comment.deleted", {"off": off})
        elif action == "slow_mode":
            if seconds is None or not 0 <= seconds <= MAX_SLOW_MODE_S:
                raise ProtocolError("bad_request", f"slow_mode needs seconds in [0, {MAX_SLOW_MODE_S}]")
            await repository.set_slow_mode(room_id, seconds)
            await self._state.set_slow_mode(room_id, seconds)
        else:
            target = self._target(user_id, host_id)
            if action == "mute":
                if seconds is not None and not 0 <= seconds <= MAX_MUTE_S:
                    raise ProtocolError("bad_request", f"seconds must be in [0, {MAX_MUTE_S}]")
                until = int(time.time() * 1000) + seconds * 1000 if seconds else 0
                await repository.mute(room_id, target, until)
                await self._state.set_mute(room_id, target, until)
            elif action == "unmute":
                await repository.unmute(room_id, target)
                await self._state.set_mute(room_id, target, None)
            elif action == "ban":
                await repository.ban(room_id, target)
                await self._state.set_ban(room_id, target, True)
                await self._node.kick(
                    f"room:{room_id}", target, code="banned", reason="banned from this room by the host"
                )
            else:
                await repository.unban(room_id, target)
                await self._state.set_ban(room_id, target, False)
        self._metrics.moderation.labels(action).inc()

    @staticmethod
    def _target(user_id: str | None, host_id: str) -> str:
        if not user_id:
            raise ProtocolError("bad_request", "user_id must name the user to moderate")
        if user_id == host_id:
            raise ProtocolError("bad_request", "the host cannot moderate themselves")
        return user_id
