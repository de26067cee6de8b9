"""Fan-out of one publisher's encoded frames to the viewers attached in this process."""

import logging
from collections.abc import Callable, Iterable

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .forward import ForwardTrack, is_keyframe, to_packet
from .keyframes import KeyframeThrottle

logger = logging.getLogger(__name__)

KEYFRAME_INTERVAL_S = 0.5
"""Quiet period between keyframe requests to the publisher; joins in one period share a
keyframe. Keyframes are several times larger than other frames, so a join storm must not
turn the stream into keyframes only."""


class Broadcast:
    """Routes each encoded frame to every attached viewer track, unmodified.

    Frames are wrapped once into an `av.Packet` and that object is shared by all viewers;
    each viewer's sender only re-packetizes it. The publisher is asked for a keyframe
    whenever an attached viewer is waiting for one (new, or recovering from a drop).
    """

    def __init__(self, request_keyframe: Callable[[], None]) -> None:
        self.codecs: dict[str, RTCRtpCodecParameters] = {}
        """Per kind, the codec negotiated with the publisher; viewers are offered only it."""
        self._tracks: dict[str, set[ForwardTrack]] = {"audio": set(), "video": set()}
        self._keyframes = KeyframeThrottle(request_keyframe, KEYFRAME_INTERVAL_S)
        self._mismatch_logged: set[str] = set()

    def request_keyframe(self) -> None:
        """Forward a viewer's PLI/FIR; coalesced with everyone else's."""
        self._keyframes.request()

    def attach(self, tracks: Iterable[ForwardTrack]) -> None:
        for track in tracks:
            self._tracks[track.kind].add(track)
            if track.awaiting_keyframe:
                self._keyframes.request_if_due()

    def detach(self, tracks: Iterable[ForwardTrack]) -> None:
        for track in tracks:
            self._tracks[track.kind].discard(track)

    def push(self, kind: str, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        """Called by the publisher's receiver for each complete encoded frame."""
        tracks = self._tracks.get(kind)
        if not tracks:
            return
        expected = self.codecs.get(kind)
        if expected is None or expected.mimeType.lower() != codec.mimeType.lower():
            # Viewers negotiated `expected`; other payloads would not decode there.
            if kind not in self._mismatch_logged:
                self._mismatch_logged.add(kind)
                logger.warning("publisher sends %s, viewers expect %s", codec.mimeType, expected)
            return
        packet = to_packet(frame, codec.clockRate)
        keyframe = kind == "audio" or is_keyframe(codec.name, frame.data)
        waiting = False
        for track in tracks:
            waiting |= track.offer(packet, keyframe)
        if waiting:
            self._keyframes.request_if_due()

    def close(self) -> None:
        """End every attached track; their senders stop on the next pull."""
        self._keyframes.cancel()
        for tracks in self._tracks.values():
            for track in tracks:
                track.end()
            tracks.clear()
