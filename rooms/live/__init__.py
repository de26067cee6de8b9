"""Live rooms: comments, likes, viewers, pins, host moderation and recovery."""

from .module import LiveRooms
from .records import Audience, Room, RoomStatus
from .settings import RoomSettings

__all__ = ["Audience", "LiveRooms", "Room", "RoomSettings", "RoomStatus"]
