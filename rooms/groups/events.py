"""How a stored message looks on the wire: one function for live pushes, recovery
and history pages, so all three always agree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .rules import ANNOUNCEMENT


class LiveRoom(Protocol):
    """What a room card shows of a live room (rooms.live.records.Room has it)."""

    @property
    def title(self) -> str: ...

    @property
    def status(self) -> str: ...


class LiveRoomDirectory(Protocol):
    """What group chats need from live rooms (rooms.live.LiveRooms provides it)."""

    async def room(self, room_id: str) -> LiveRoom | None: ...


#: Looks up a live room's current state by id; None when unknown.
RoomLookup = Callable[[str], Awaitable[LiveRoom | None]]


def channel(group_id: int) -> str:
    return f"group:{group_id}"


def event_name(kind: str) -> str:
    """Announcements are their own event; everything else is a ``message``."""
    return "announcement" if kind == ANNOUNCEMENT else "message"


def message_data(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The contract's ``message {seq, user_id, name, text, kind, ref, ts}`` plus ``recalled``."""
    return {
        "seq": row["seq"],
        "user_id": row["sender_id"],
        "name": row["sender_name"],
        "text": row["text"],
        "kind": row["kind"],
        "ref": dict(row["ref"]) if row["ref"] is not None else None,
        "ts": row["created_at"],
        "recalled": row["recalled_seq"] is not None,
    }


async def with_room_status(messages: list[dict[str, Any]], lookup: RoomLookup | None) -> None:
    """Add the live room's ``status`` and ``title`` to each room card's ``ref``.

    A card says where to go; whether the room is live is looked up when the card is
    shown, once per room per call.
    """
    if lookup is None:
        return
    seen: dict[str, LiveRoom | None] = {}
    for message in messages:
        ref = message["ref"]
        if message["kind"] != "room_card" or ref is None or message["recalled"]:
            continue
        room_id = ref["room_id"]
        if room_id not in seen:
            seen[room_id] = await lookup(room_id)
        room = seen[room_id]
        if room is None:
            ref["status"] = "unknown"
        else:
            ref["status"], ref["title"] = room.status, room.title
