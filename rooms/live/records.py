"""Plain values the live-room modules pass around (and other domains read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

RoomStatus = Literal["live", "offline", "ended"]
STATUSES: tuple[RoomStatus, ...] = ("live", "offline", "ended")


@dataclass(frozen=True, slots=True)
class Room:
    """A room's record. ``status`` is "offline" until the host's stream is up, "live"
    while it is, and "ended" for good after the host ends the room."""

    id: str
    title: str
    host_id: str
    status: RoomStatus
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "host_id": self.host_id,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Audience:
    """Who watched and who took part, for the host's stats."""

    peak_viewers: int
    #: Signed-in users who subscribed to the room at least once.
    viewer_ids: frozenset[str]
    #: Signed-in users who commented or liked.
    interacting_ids: frozenset[str]
    comments: int
    likes: int


@dataclass(frozen=True, slots=True)
class Control:
    """The room state every process must enforce identically (loaded from SQL)."""

    status: RoomStatus
    pinned_product_id: str | None = None
    slow_mode_s: int = 0
    #: User -> epoch ms the mute ends (0: until unmuted).
    muted: dict[str, int] = field(default_factory=dict)
    banned: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a comment may be posted now; ``wait_ms`` says for how long it may not."""

    #: None: allowed. Else "ended", "banned", "muted", "slow" or "rate".
    refusal: str | None
    wait_ms: int = 0

    @property
    def allowed(self) -> bool:
        return self.refusal is None


ALLOWED = Verdict(None)


@dataclass(frozen=True, slots=True)
class RoomView:
    """What a subscribe snapshot needs from the shared state, read in one go."""

    status: RoomStatus
    pinned_product_id: str | None
    slow_mode_s: int
    likes: int
    viewers: int
    #: The latest comments, oldest first, each with its ``off``.
    comments: list[dict[str, Any]]
