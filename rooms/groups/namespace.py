"""The ``group:<id>`` channels: members only, positions and recovery from SQL.

A group's stream offset is its message seq, assigned in SQL by the write path, so
the broker keeps no history here: a subscriber resuming from ``since`` gets the
missed messages from the messages table, or — past the recovery limit, or after the
epoch changed — ``recovered: false`` and pages through ``GET …/messages``.
"""

from __future__ import annotations

from typing import Any

from realtime.auth import Identity
from realtime.broker import Broker, Publication, StreamPosition
from realtime.errors import ProtocolError
from realtime.node import Namespace, Recovery

from .events import RoomLookup, event_name, message_data, with_room_status
from .store import GroupStore

#: Largest group id or message seq accepted: SQL keeps them as 64-bit integers, and a
#: larger one would fail a whole write batch, other members' messages included.
MAX_ID = 10**18 - 1


def parse_group_id(raw: object) -> int | None:
    """A group id from a channel name, a command argument or a path (int or ASCII digits)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 < raw <= MAX_ID else None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        value = int(raw)
        return value if value > 0 else None
    return None


class GroupNamespace(Namespace):
    prefix = "group"
    history = None

    def __init__(self, broker: Broker, store: GroupStore, *, recovery_limit: int, rooms: RoomLookup | None):
        super().__init__(broker)
        self._store = store
        self._recovery_limit = recovery_limit
        self._rooms = rooms

    async def authorize_subscribe(self, identity: Identity, channel_id: str) -> None:
        group_id = parse_group_id(channel_id)
        if identity.user_id is None or group_id is None:
            raise ProtocolError("not_member", "group channels are for their members")
        if await self._store.role(group_id, identity.user_id) is None:
            raise ProtocolError("not_member", "you are not a member of this group")

    async def snapshot(self, identity: Identity, channel_id: str) -> dict[str, Any]:
        # Checked again here, after the hub subscription is in place: a kick that
        # committed since authorize_subscribe refuses the subscription instead of
        # leaving it open with no kick left to end it.
        group_id = parse_group_id(channel_id)
        if identity.user_id is None or group_id is None:
            raise ProtocolError("not_member", "group channels are for their members")
        return await self._store.view(group_id, identity.user_id)

    async def position(self, channel: str) -> StreamPosition:
        group_id = parse_group_id(channel.partition(":")[2])
        found = None if group_id is None else await self._store.position(group_id)
        return StreamPosition(0, "") if found is None else StreamPosition(*found)

    async def recover(self, channel: str, since: StreamPosition) -> Recovery:
        """ALL messages after ``since`` from SQL, or none with ``recovered: false``."""
        position = await self.position(channel)
        missed = position.offset - since.offset
        if since.epoch != position.epoch or missed < 0 or missed > self._recovery_limit:
            return Recovery([], position, False)
        group_id = parse_group_id(channel.partition(":")[2])
        if group_id is None or missed == 0:
            return Recovery([], position, True)
        rows = await self._store.messages_after(group_id, since.offset, position.offset)
        datas = [message_data(row._mapping) for row in rows]
        await with_room_status(datas, self._rooms)
        publications = [
            Publication(channel, event_name(row.kind), data, offset=int(row.seq))
            for row, data in zip(rows, datas, strict=True)
        ]
        return Recovery(publications, position, len(publications) == missed)
