"""The ``room:<id>`` channels: public, history-backed, with a sampled comment lane.

Offsets come from the broker's bounded history (one Lua script per publish), and
recovery is the core's: ALL missed publications with ``recovered: true``, or none
with ``recovered: false`` and a fresh snapshot. Every room event except the
aggregated ``likes`` and ``viewers`` totals goes through that history.
"""

from __future__ import annotations

from typing import Any

from realtime.auth import Identity
from realtime.broker import Broker, HistoryPolicy
from realtime.errors import ProtocolError
from realtime.node import Namespace

from .service import RoomService


class RoomNamespace(Namespace):
    prefix = "room"

    def __init__(
        self, broker: Broker, service: RoomService, *, history: HistoryPolicy, comment_budget_per_s: float
    ) -> None:
        super().__init__(broker)
        self._service = service
        self.history = history
        self.sampled_budget_per_s = comment_budget_per_s

    async def authorize_subscribe(self, identity: Identity, channel_id: str) -> None:
        """Anyone may watch, guests included, except users banned from the room."""
        await self._service.directory.get(channel_id)
        if identity.user_id is not None and await self._service.state.is_banned(channel_id, identity.user_id):
            raise ProtocolError("banned", "you are banned from this room")

    async def snapshot(self, identity: Identity, channel_id: str) -> dict[str, Any]:
        return await self._service.snapshot(identity, channel_id)
