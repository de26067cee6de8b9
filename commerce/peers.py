"""What commerce needs from the live-rooms and group-chat domains, as protocols.

``rooms.live.LiveRooms`` and ``rooms.groups.GroupChats`` satisfy them; naming only what
is used keeps the dependency narrow and lets mypy check the fit.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Protocol


class RoomInfo(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def host_id(self) -> str: ...

    @property
    def status(self) -> str: ...


class AudienceInfo(Protocol):
    @property
    def peak_viewers(self) -> int: ...

    #: Signed-in users who subscribed to the room.
    @property
    def viewer_ids(self) -> Set[str]: ...

    #: Signed-in users who commented or liked.
    @property
    def interacting_ids(self) -> Set[str]: ...

    @property
    def comments(self) -> int: ...

    @property
    def likes(self) -> int: ...


class RoomDirectory(Protocol):
    async def room(self, room_id: str) -> RoomInfo | None: ...

    async def audience(self, room_id: str) -> AudienceInfo: ...


class GroupRoles(Protocol):
    async def role(self, group_id: str, user_id: str) -> str | None:
        """``owner`` | ``admin`` | ``member``, or None for someone outside the group."""
