"""SDP offer checks and the two negotiations: ingest (WHIP) and playback (WHEP)."""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from aiortc.exceptions import InternalError, InvalidAccessError, OperationError
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from .errors import BadOffer, NotAcceptable
from .forward import ForwardTrack
from .hooks import intercept_encoded_frames, on_keyframe_request

logger = logging.getLogger(__name__)

MEDIA_KINDS = ("audio", "video")
PUBLISH_DIRECTIONS = ("sendonly", "sendrecv")
PLAY_DIRECTIONS = ("recvonly", "sendrecv")

MediaSink = Callable[[str, RTCRtpCodecParameters, JitterFrame], None]


@dataclass(frozen=True)
class Ingest:
    """Result of answering a publisher."""

    answer: str
    codecs: dict[str, RTCRtpCodecParameters]
    """Per kind, the codec the publisher will send: the first one in our answer."""


def parse_offer(offer: str) -> sdp.SessionDescription:
    """Parse and check what aiortc relies on without checking it itself.

    aiortc validates offers only partly: an audio/video section without `a=mid` or
    `a=setup`, or a BUNDLE group naming a missing section, makes it fail deep inside
    the answer (AttributeError, ValueError) and can leave the peer connection unable
    to close.
    """
    try:
        description = sdp.SessionDescription.parse(offer)
    except Exception as exc:  # its parser raises assorted errors (even asserts) on bad input
        raise BadOffer(f"unreadable SDP offer: {exc!r}") from exc
    sections = [m for m in description.media if m.kind in MEDIA_KINDS]
    if not sections:
        raise BadOffer("the offer has no audio or video section")
    mids = {m.rtp.muxId for m in description.media}
    for media in sections:
        if not media.rtp.muxId:
            raise BadOffer(f"the {media.kind} section has no a=mid")
        if media.dtls is None or not media.dtls.fingerprints:
            raise BadOffer(f"the {media.kind} section lacks a=setup or a=fingerprint")
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise BadOffer(f"the {media.kind} section lacks ICE credentials")
        if media.direction is None:
            raise BadOffer(f"the {media.kind} section has no direction attribute")
    for group in description.group:
        if not {str(item) for item in group.items} <= mids:
            raise BadOffer(f"a=group:{group} names a section that does not exist")
    return description


def offered_kinds(offer: str, directions: Sequence[str]) -> list[str]:
    """Kinds of the offer's audio/video sections that point the way we need."""
    description = parse_offer(offer)
    return [m.kind for m in description.media if m.kind in MEDIA_KINDS and m.direction in directions]


def negotiated_codecs(answer: str) -> dict[str, RTCRtpCodecParameters]:
    """First non-RTX codec of each active audio/video section of our answer."""
    codecs: dict[str, RTCRtpCodecParameters] = {}
    for media in sdp.SessionDescription.parse(answer).media:
        if media.kind not in MEDIA_KINDS or media.direction == "inactive":
            continue
        for codec in media.rtp.codecs:
            if codec.name.lower() != "rtx":
                codecs.setdefault(media.kind, codec)
                break
    return codecs


def codec_preferences(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """The capability matching the publisher's codec (plus RTX), for a viewer's sender."""
    kind = codec.mimeType.split("/")[0].lower()
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    same_type = [c for c in capabilities if c.mimeType.lower() == codec.mimeType.lower()]
    exact = [c for c in same_type if c.parameters == codec.parameters]
    chosen = (exact or same_type)[:1]
    rtx = [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen + rtx


async def answer_ingest(pc: RTCPeerConnection, offer: str, sink: MediaSink) -> Ingest:
    """Answer a WHIP offer; the receivers hand encoded frames to `sink`, never decode."""
    kinds = offered_kinds(offer, PUBLISH_DIRECTIONS)
    if not kinds:
        raise BadOffer("a WHIP offer must send media (sendonly or sendrecv)")
    if len(set(kinds)) != len(kinds):
        raise NotAcceptable("at most one audio and one video track per publisher")
    await _apply_offer(pc, offer)
    for transceiver in pc.getTransceivers():
        intercept_encoded_frames(transceiver.receiver, partial(sink, transceiver.kind))
    answer = await _answer(pc)
    return Ingest(answer=answer, codecs=negotiated_codecs(answer))


def playback_kinds(offer: str, codecs: Mapping[str, RTCRtpCodecParameters]) -> list[str]:
    """The room's media kinds that the viewer's offer can receive, one each."""
    offered = offered_kinds(offer, PLAY_DIRECTIONS)
    kinds = [kind for kind in MEDIA_KINDS if kind in codecs and kind in offered]
    if not kinds:
        raise NotAcceptable(f"the offer receives none of the room's media ({', '.join(codecs)})")
    return kinds


async def answer_playback(
    pc: RTCPeerConnection,
    offer: str,
    codecs: Mapping[str, RTCRtpCodecParameters],
    tracks: Sequence[ForwardTrack],
    on_keyframe_needed: Callable[[], None],
) -> str:
    """Answer a WHEP offer with one send-only track per kind, in the publisher's codec.

    The transceivers exist before the offer is applied, so aiortc binds the offer's
    sections to them and filters codecs by their preferences: the viewer then gets the
    publisher's payload as is, or the offer is refused if it cannot decode it.
    """
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences(codecs[track.kind]))
        on_keyframe_request(transceiver.sender, on_keyframe_needed)
    await _apply_offer(pc, offer)
    return await _answer(pc)


async def _apply_offer(pc: RTCPeerConnection, offer: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except OperationError as exc:
        raise NotAcceptable(f"no common codec: {exc}") from exc
    except (ValueError, InvalidAccessError, InternalError) as exc:
        raise BadOffer(f"invalid SDP offer: {exc}") from exc


async def _answer(pc: RTCPeerConnection) -> str:
    # aiortc gathers all candidates here (no trickle), as RFC 9725 wants of the server.
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        # An offer `parse_offer` let through still broke aiortc: the client's fault
        # as far as HTTP goes, but worth a line in the log to tighten the checks.
        logger.warning("aiortc could not answer an offer: %r", exc)
        raise BadOffer(f"cannot answer this offer: {exc!r}") from exc
    return pc.localDescription.sdp
