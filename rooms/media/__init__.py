"""Live video for rooms: WHIP ingest and WHEP playback, relayed without transcoding."""

from .access import MediaAccess, StreamStatus
from .relay import MediaRelay
from .settings import MediaSettings

__all__ = ["MediaAccess", "MediaRelay", "MediaSettings", "StreamStatus"]
