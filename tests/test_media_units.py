"""The relay's pieces that need no network: keyframe detection, per-viewer queues,
keyframe coalescing, ordered status delivery, SDP helpers, the pixel stamp."""

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rooms.media.access import StreamStatus
from rooms.media.broadcast import Broadcast
from rooms.media.errors import BadOffer, NotAcceptable
from rooms.media.forward import ForwardTrack, Packet, is_keyframe, to_packet
from rooms.media.keyframes import KeyframeThrottle
from rooms.media.peers import (
    codec_preferences,
    negotiated_codecs,
    offered_kinds,
    playback_kinds,
)
from rooms.media.settings import MediaSettings
from rooms.media.status import StatusNotifier
from rooms.media.synthetic import StampedVideoTrack, draw_stamp, read_stamp

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)


def packet(n: int = 0) -> Packet:
    return to_packet(JitterFrame(data=bytes([n]), timestamp=n * 3000), 90000)


# keyframe detection


def test_vp8_keyframe_bit() -> None:
    assert is_keyframe("VP8", bytes([0x10, 0x02, 0x00]))
    assert not is_keyframe("VP8", bytes([0x11, 0x02, 0x00]))
    assert not is_keyframe("VP8", b"")


def test_h264_idr_or_sps_starts_a_picture() -> None:
    sps_pps_idr = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x68\xce" + b"\x00\x00\x01\x65\x88"
    idr_only = b"\x00\x00\x00\x01\x65\x88\x84"
    slice_only = b"\x00\x00\x00\x01\x41\x9a\x00"
    assert is_keyframe("H264", sps_pps_idr)
    assert is_keyframe("h264", idr_only)
    assert not is_keyframe("H264", slice_only)
    assert not is_keyframe("H264", b"\x00\x00\x01")


def test_audio_frames_are_always_decodable() -> None:
    assert is_keyframe("opus", b"\x01")


def test_packet_keeps_payload_and_clock() -> None:
    p = to_packet(JitterFrame(data=b"abc", timestamp=96000), 48000)
    assert bytes(p) == b"abc"
    assert p.pts == 96000
    assert p.time_base == fractions.Fraction(1, 48000)


# per-viewer queue


async def test_video_track_waits_for_keyframe_then_forwards_in_order() -> None:
    track = ForwardTrack("video", capacity=4)
    assert track.offer(packet(1), keyframe=False) is True  # still waiting
    assert track.offer(packet(2), keyframe=True) is False
    assert track.offer(packet(3), keyframe=False) is False
    assert [bytes(await track.recv()) for _ in range(2)] == [b"\x02", b"\x03"]


async def test_full_queue_is_emptied_and_video_resumes_at_next_keyframe() -> None:
    track = ForwardTrack("video", capacity=2)
    track.offer(packet(1), keyframe=True)
    track.offer(packet(2), keyframe=False)
    assert track.offer(packet(3), keyframe=False) is True  # overflow: dropped, waiting
    assert track.dropped == 2
    assert track.offer(packet(4), keyframe=False) is True
    assert track.offer(packet(5), keyframe=True) is False
    assert bytes(await track.recv()) == b"\x05"


async def test_full_queue_accepts_a_keyframe_at_once() -> None:
    track = ForwardTrack("video", capacity=1)
    track.offer(packet(1), keyframe=True)
    assert track.offer(packet(2), keyframe=True) is False
    assert bytes(await track.recv()) == b"\x02"


async def test_audio_track_never_waits() -> None:
    track = ForwardTrack("audio", capacity=1)
    assert not track.awaiting_keyframe
    assert track.offer(packet(1), keyframe=True) is False
    assert track.offer(packet(2), keyframe=True) is False
    assert track.dropped == 1
    assert bytes(await track.recv()) == b"\x02"


async def test_ended_track_stops_its_reader() -> None:
    track = ForwardTrack("video", capacity=2)
    track.offer(packet(1), keyframe=True)
    track.end()
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"
    assert track.offer(packet(2), keyframe=True) is False


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ForwardTrack("video", capacity=0)


# keyframe coalescing


async def test_requests_inside_the_interval_cost_one_deferred_keyframe() -> None:
    sent: list[float] = []
    loop = asyncio.get_running_loop()
    throttle = KeyframeThrottle(lambda: sent.append(loop.time()), interval=0.1)
    throttle.request()
    assert len(sent) == 1
    throttle.request()
    throttle.request()
    assert len(sent) == 1  # deferred, not dropped
    await asyncio.sleep(0.15)
    assert len(sent) == 2
    assert sent[1] - sent[0] >= 0.099
    await asyncio.sleep(0.15)
    assert throttle.sent == 2


async def test_repeated_conditions_are_skipped_not_deferred() -> None:
    sent: list[int] = []
    throttle = KeyframeThrottle(lambda: sent.append(1), interval=0.05)
    assert throttle.request_if_due() is True
    assert throttle.request_if_due() is False
    await asyncio.sleep(0.1)
    assert sent == [1]  # nothing was queued for later
    assert throttle.request_if_due() is True
    assert sent == [1, 1]


async def test_cancelled_throttle_sends_nothing_more() -> None:
    sent: list[int] = []
    throttle = KeyframeThrottle(lambda: sent.append(1), interval=0.05)
    throttle.request()
    throttle.request()
    throttle.cancel()
    await asyncio.sleep(0.1)
    assert sent == [1]


async def test_broadcast_shares_frames_and_asks_keyframes_for_waiting_viewers() -> None:
    asked: list[int] = []
    broadcast = Broadcast(lambda: asked.append(1))
    broadcast.codecs = {"video": VP8}
    first, second = ForwardTrack("video", 8), ForwardTrack("video", 8)
    broadcast.attach([first, second])
    assert asked == [1]  # a new viewer needs a keyframe
    key = JitterFrame(data=bytes([0x10, 1]), timestamp=0)
    delta = JitterFrame(data=bytes([0x11, 2]), timestamp=3000)
    broadcast.push("video", VP8, key)
    broadcast.push("video", VP8, delta)
    got = [await first.recv(), await first.recv()]
    assert [bytes(p) for p in got] == [key.data, delta.data]
    assert (await second.recv()) is got[0]  # one packet object for all viewers
    broadcast.push("video", H264, key)  # not what viewers negotiated: dropped
    assert first._queue.empty()
    broadcast.close()
    with pytest.raises(MediaStreamError):
        await first.recv()


# ordered status delivery


async def test_status_changes_arrive_in_order_per_room_even_if_slow() -> None:
    seen: list[tuple[str, StreamStatus]] = []

    async def callback(room_id: str, status: StreamStatus) -> None:
        await asyncio.sleep(0.05 if status == "live" else 0)
        seen.append((room_id, status))

    notifier = StatusNotifier(callback)
    notifier.notify("a", "live")
    notifier.notify("a", "offline")
    await notifier.drain()
    assert seen == [("a", "live"), ("a", "offline")]


async def test_a_failing_callback_does_not_block_later_changes() -> None:
    seen: list[StreamStatus] = []

    async def callback(room_id: str, status: StreamStatus) -> None:
        if status == "live":
            raise RuntimeError("rooms domain down")
        seen.append(status)

    notifier = StatusNotifier(callback)
    notifier.notify("a", "live")
    notifier.notify("a", "offline")
    await notifier.drain()
    assert seen == ["offline"]


# settings and SDP helpers


def test_settings_never_fall_back_to_a_public_stun_server() -> None:
    assert MediaSettings().rtc_configuration().iceServers == []
    servers = MediaSettings(ice_servers=("stun:stun.example.net:3478",)).rtc_configuration()
    assert [s.urls for s in servers.iceServers or []] == ["stun:stun.example.net:3478"]
    with pytest.raises(ValueError):
        MediaSettings(max_viewers_per_room=-1)


async def offer(*kinds_and_directions: tuple[str, str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for kind, direction in kinds_and_directions:
            pc.addTransceiver(kind, direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_offer_checks() -> None:
    sdp = await offer(("audio", "sendonly"), ("video", "sendonly"))
    assert offered_kinds(sdp, ("sendonly", "sendrecv")) == ["audio", "video"]
    assert offered_kinds(sdp, ("recvonly",)) == []
    with pytest.raises(BadOffer):
        offered_kinds("not sdp at all", ("sendonly",))
    viewer = await offer(("video", "recvonly"))
    assert playback_kinds(viewer, {"audio": OPUS, "video": VP8}) == ["video"]
    with pytest.raises(NotAcceptable):
        playback_kinds(viewer, {"audio": OPUS})


async def test_answer_codec_and_viewer_preferences() -> None:
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        publisher.addTransceiver("video", direction="sendonly")
        await publisher.setLocalDescription(await publisher.createOffer())
        await server.setRemoteDescription(publisher.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        codecs = negotiated_codecs(server.localDescription.sdp)
    finally:
        await publisher.close()
        await server.close()
    assert codecs["video"].mimeType == "video/VP8"
    assert [c.mimeType for c in codec_preferences(codecs["video"])] == ["video/VP8", "video/rtx"]
    h264 = next(c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264")
    wanted = RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=102, parameters=h264.parameters
    )
    assert codec_preferences(wanted)[0] == h264


# pixel stamp


@pytest.mark.parametrize("number", [0, 1, 0x5A5A, 0xFFFF])
def test_stamp_round_trip(number: int) -> None:
    luma = np.full((240, 320), 128, dtype=np.uint8)
    draw_stamp(luma, number)
    frame = av.VideoFrame.from_ndarray(luma, format="gray")
    assert read_stamp(frame) == number


def test_unstamped_frame_reads_as_none() -> None:
    frame = av.VideoFrame.from_ndarray(np.full((240, 320), 128, dtype=np.uint8), format="gray")
    assert read_stamp(frame) is None


async def test_stamped_track_paces_and_remembers_capture_times() -> None:
    track = StampedVideoTrack(320, 240, fps=50)
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(5)]
    assert loop.time() - start >= 4 / 50 - 0.005
    assert [read_stamp(f) for f in frames] == [0, 1, 2, 3, 4]
    assert list(track.captured) == [0, 1, 2, 3, 4]
