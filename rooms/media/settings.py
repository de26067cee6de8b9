"""Operator settings of the media relay."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer

from realtime.config import Env


@dataclass(frozen=True, kw_only=True)
class MediaSettings:
    """How the relay negotiates peer connections and how many it accepts."""

    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs offered to aiortc and advertised in `Link` headers; empty = no
    public STUN server is ever contacted (aiortc would otherwise default to Google's)."""

    max_viewers_per_room: int = 200
    """WHEP sessions per room in this process; above it WHEP answers 503 + Retry-After."""

    connect_timeout_s: float = 30.0
    """Seconds a session may take from its answer to a connected state before it is
    dropped, so an abandoned WHIP POST cannot hold a room's publisher slot for long."""

    def __post_init__(self) -> None:
        if self.max_viewers_per_room < 0:
            raise ValueError("max_viewers_per_room must be >= 0")
        if self.connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be > 0")

    @classmethod
    def from_env(cls, env: Env | None = None) -> MediaSettings:
        env = env or Env()
        return cls(
            ice_servers=env.items("LIVEMART_ICE_SERVERS"),
            max_viewers_per_room=env.integer("LIVEMART_MAX_VIEWERS_PER_ROOM", 200),
            connect_timeout_s=env.number("LIVEMART_MEDIA_CONNECT_TIMEOUT_S", 30.0),
        )

    def rtc_configuration(self) -> RTCConfiguration:
        """A configuration with exactly the configured ICE servers, never aiortc's default."""
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.ice_servers])
