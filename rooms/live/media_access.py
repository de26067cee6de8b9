"""What the WebRTC relay asks the room domain: who may publish or watch, and where a
stream's status goes. Failures are starlette HTTPExceptions, as the relay expects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request

from realtime.errors import ProtocolError
from realtime.http import identity

from .ops import room_id_of
from .records import Room
from .service import RoomService

if TYPE_CHECKING:  # the relay package pulls in aiortc; rooms need only its types
    from ..media.access import StreamStatus


def _http(error: ProtocolError) -> HTTPException:
    return HTTPException(error.status, error.message)


class RoomMediaAccess:
    """Implements rooms.media.access.MediaAccess for live rooms."""

    def __init__(self, service: RoomService) -> None:
        self._service = service

    async def _room(self, room_id: str) -> Room:
        room = await self._service.directory.get(room_id_of(room_id))
        if room.status == "ended":
            raise ProtocolError("not_found", "the room has ended")
        return room

    async def authorize_publish(self, request: Request, room_id: str) -> str:
        """Only the room's host may send its stream (WHIP)."""
        try:
            caller = identity(request).require_user()
            room = await self._room(room_id)
            if room.host_id != caller:
                raise ProtocolError("forbidden", "only the room's host may publish its stream")
        except ProtocolError as exc:
            raise _http(exc) from None
        return caller

    async def authorize_watch(self, request: Request, room_id: str) -> str | None:
        """Anyone may watch (WHEP), guests included, except users banned from the room."""
        try:
            caller = identity(request).user_id
            room = await self._room(room_id)
            if caller is not None and await self._service.state.is_banned(room.id, caller):
                raise ProtocolError("banned", "you are banned from this room")
        except ProtocolError as exc:
            raise _http(exc) from None
        return caller

    async def stream_status_changed(self, room_id: str, status: StreamStatus) -> None:
        await self._service.stream_changed(room_id, status)
