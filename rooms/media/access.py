"""What the relay needs from the rooms domain: who may publish or watch, and who to tell."""

from typing import Literal, Protocol

from starlette.requests import Request

StreamStatus = Literal["live", "offline"]


class MediaAccess(Protocol):
    """Implemented by the rooms domain and handed to `MediaRelay`.

    The relay knows nothing about hosts, bans or tokens; it asks here and keeps the
    returned user id to decide who may end a session later.
    """

    async def authorize_publish(self, request: Request, room_id: str) -> str:
        """Return the caller's user id, or raise starlette `HTTPException` (401/403/404)."""
        ...

    async def authorize_watch(self, request: Request, room_id: str) -> str | None:
        """Return the caller's user id (None for a guest), or raise `HTTPException`."""
        ...

    async def stream_status_changed(self, room_id: str, status: StreamStatus) -> None:
        """Called in order per room: "live" once the publisher connects, "offline" after."""
        ...
