"""Per-viewer buffering of encoded media: bounded, and never starting mid-picture."""

import asyncio
import fractions
from typing import TYPE_CHECKING, TypeAlias

import av
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

if TYPE_CHECKING:  # av's Packet is generic in its stubs only
    from av.stream import Stream

    Packet: TypeAlias = av.Packet[Stream]
else:
    Packet = av.Packet

H264_IDR = 5
H264_SPS = 7


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether a depayloaded frame can be decoded without the frames before it.

    Audio frames always can. VP8 flags inter frames with bit 0 of the first byte
    (RFC 6386 9.1). H.264 arrives in Annex B form from aiortc's depayloader; an IDR
    slice or a sequence parameter set starts a decodable picture.
    """
    name = codec_name.upper()
    if name == "VP8":
        return bool(data) and data[0] & 0x01 == 0
    if name == "H264":
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F in (H264_IDR, H264_SPS):
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
        return False
    return True


def to_packet(frame: JitterFrame, clock_rate: int) -> Packet:
    """Wrap an encoded frame so aiortc's sender re-packetizes it instead of encoding.

    `frame.timestamp` is in RTP clock units, zero at the publisher's first frame.
    """
    packet: Packet = av.Packet(frame.data)
    packet.pts = frame.timestamp
    packet.time_base = fractions.Fraction(1, clock_rate)
    return packet


class ForwardTrack(MediaStreamTrack):
    """What one viewer's RTCRtpSender pulls: encoded packets, at most `capacity` queued.

    When the viewer falls behind, the queue is emptied rather than grown, and video
    resumes at the next keyframe so the viewer never decodes a picture whose references
    were dropped. A new video track likewise waits for its first keyframe.
    """

    def __init__(self, kind: str, capacity: int) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.kind = kind
        self.dropped = 0
        """Frames discarded because this viewer's queue was full."""
        self._queue: asyncio.Queue[Packet | None] = asyncio.Queue(capacity)
        self._awaiting_keyframe = kind == "video"

    @property
    def awaiting_keyframe(self) -> bool:
        return self._awaiting_keyframe

    def offer(self, packet: Packet, keyframe: bool) -> bool:
        """Queue one frame; return True while this viewer still needs a keyframe."""
        if self.readyState != "live":
            return False
        if self._awaiting_keyframe and not keyframe:
            return True
        if self._queue.full():
            self.dropped += self._drain()
            if not keyframe:
                self._awaiting_keyframe = True
                return True
        self._awaiting_keyframe = False
        self._queue.put_nowait(packet)
        return False

    def end(self) -> None:
        """Make the next `recv` raise, which ends the sender's RTP loop."""
        self._drain()
        self._queue.put_nowait(None)

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def _drain(self) -> int:
        count = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            count += 1
        return count
