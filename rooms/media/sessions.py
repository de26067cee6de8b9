"""The state the relay keeps per WHIP/WHEP session and per publishing room."""

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Literal

from aiortc import RTCPeerConnection

from .broadcast import Broadcast
from .forward import ForwardTrack

Role = Literal["publisher", "viewer"]


def new_session_id() -> str:
    """Unguessable: a guest's session URL is the only proof that it may end the session."""
    return secrets.token_urlsafe(16)


@dataclass(eq=False)
class Session:
    room_id: str
    role: Role
    owner: str | None
    """User id from the access check; None for a guest viewer."""
    pc: RTCPeerConnection
    id: str = field(default_factory=new_session_id)
    answer: str = ""
    """Our SDP answer, once negotiated."""
    tracks: list[ForwardTrack] = field(default_factory=list)
    """A viewer's per-kind queues (empty for a publisher)."""
    ended: bool = False
    """Set before any teardown await, so teardown runs once however it is triggered."""
    deadline: asyncio.TimerHandle | None = None
    """Drops the session if it has not connected in time."""


@dataclass(eq=False)
class Room:
    """A room with a publisher in this process, and the viewers fed from it."""

    publisher: Session
    broadcast: Broadcast
    viewers: dict[str, Session] = field(default_factory=dict)
    live: bool = False
    """Whether "live" was reported, so exactly one "offline" follows it."""
