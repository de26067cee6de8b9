"""The aiortc internals the relay depends on, exercised on real aiortc objects.

If one of these fails after an aiortc upgrade, the relay would decode again, or stop
forwarding keyframe requests: fix rooms/media/hooks.py before moving the pin.
"""

import inspect
from importlib.metadata import version

import aiortc
import pytest
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtpPacket

from rooms.media import hooks
from rooms.media.forward import to_packet

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)


def dtls_transport() -> RTCDtlsTransport:
    gatherer = RTCIceGatherer(iceServers=[])
    return RTCDtlsTransport(RTCIceTransport(gatherer), [RTCCertificate.generateCertificate()])


async def start(receiver: RTCRtpReceiver) -> None:
    """What aiortc does on an offer and once DTLS is up: SSRC 1234 is then VP8."""
    receiver._track = RemoteStreamTrack(kind="video")
    encoding = RTCRtpDecodingParameters(ssrc=1234, payloadType=97)
    await receiver.receive(
        RTCRtpReceiveParameters(codecs=[VP8], encodings=[encoding], rtcp=RTCRtcpParameters())
    )


def vp8_rtp(sequence: int, timestamp: int, payload: bytes) -> RtpPacket:
    # One-byte VP8 payload descriptor with the start-of-partition bit, then the frame.
    rtp = RtpPacket(payload_type=97, sequence_number=sequence, timestamp=timestamp, ssrc=1234)
    rtp.payload = b"\x10" + payload
    rtp.marker = 1
    return rtp


def test_aiortc_is_the_pinned_release() -> None:
    assert aiortc.__version__ == hooks.PINNED_AIORTC == version("aiortc")
    hooks.check_hooks()


def test_check_hooks_refuses_another_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"9\.9\.9"):
        hooks.check_hooks()


def test_private_entry_points_are_where_the_hooks_expect_them() -> None:
    receive = inspect.getsource(RTCRtpReceiver.receive)
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    sender = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "self.__decoder_queue," in receive  # handed to the decoder thread
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handle
    assert "self._send_keyframe()" in sender
    assert inspect.signature(RTCRtpReceiver._send_rtcp_pli).parameters.keys() == {
        "self",
        "media_ssrc",
    }


async def test_intercepted_receiver_yields_encoded_frames_not_pictures() -> None:
    receiver = RTCRtpReceiver("video", dtls_transport())
    frames: list[tuple[RTCRtpCodecParameters, JitterFrame]] = []
    hooks.intercept_encoded_frames(receiver, lambda codec, frame: frames.append((codec, frame)))
    await start(receiver)
    with pytest.raises(RuntimeError, match="already started"):
        hooks.intercept_encoded_frames(receiver, lambda codec, frame: None)
    try:
        # A frame is complete once a packet of the next frame arrives.
        await receiver._handle_rtp_packet(vp8_rtp(1, 3000, b"\x10key"), arrival_time_ms=0)
        await receiver._handle_rtp_packet(vp8_rtp(2, 6000, b"\x11delta"), arrival_time_ms=33)
        await receiver._handle_rtp_packet(vp8_rtp(3, 9000, b"\x11next"), arrival_time_ms=66)
    finally:
        await receiver.stop()  # must also release the idle decoder thread
    assert [(c.mimeType, f.data, f.timestamp) for c, f in frames] == [
        ("video/VP8", b"\x10key", 0),
        ("video/VP8", b"\x11delta", 3000),
    ]


async def test_a_failing_sink_loses_frames_not_the_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = RTCRtpReceiver("video", dtls_transport())
    seen: list[bytes] = []

    def flaky(codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        seen.append(frame.data)
        if len(seen) == 1:
            raise ValueError("bug in the fan-out")

    hooks.intercept_encoded_frames(receiver, flaky)
    await start(receiver)
    try:
        for sequence in range(1, 5):
            rtp = vp8_rtp(sequence, 3000 * sequence, b"\x10f%d" % sequence)
            await receiver._handle_rtp_packet(rtp, arrival_time_ms=33 * sequence)
    finally:
        await receiver.stop()
    assert seen == [b"\x10f1", b"\x10f2", b"\x10f3"]
    assert caplog.text.count("the frame sink failed") == 1


async def test_keyframe_request_sends_a_pli_for_the_heard_ssrc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = dtls_transport()
    receiver = RTCRtpReceiver("video", transport)
    receiver._set_rtcp_ssrc(42)
    wire: list[bytes] = []

    async def capture(data: bytes) -> None:
        wire.append(data)

    monkeypatch.setattr(transport, "_send_rtp", capture)
    hooks.intercept_encoded_frames(receiver, lambda codec, frame: None)
    await start(receiver)
    try:
        await receiver._handle_rtp_packet(vp8_rtp(1, 3000, b"\x10key"), arrival_time_ms=0)
        wire.clear()
        await hooks.request_keyframe(receiver)
    finally:
        await receiver.stop()
    plis = [p for data in wire for p in RtcpPacket.parse(data) if isinstance(p, RtcpPsfbPacket)]
    assert [(p.fmt, p.ssrc, p.media_ssrc) for p in plis] == [(RTCP_PSFB_PLI, 42, 1234)]


@pytest.mark.parametrize("fmt", [RTCP_PSFB_PLI, RTCP_PSFB_FIR])
async def test_viewer_keyframe_requests_reach_the_callback(fmt: int) -> None:
    sender = RTCRtpSender("video", dtls_transport())
    calls: list[int] = []
    hooks.on_keyframe_request(sender, lambda: calls.append(1))
    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc))
    assert calls == [1]


def test_vp8_and_opus_senders_accept_pre_encoded_packets() -> None:
    for mime, clock in (("video/VP8", 90000), ("audio/opus", 48000)):
        codec = RTCRtpCodecParameters(mimeType=mime, clockRate=clock, payloadType=96)
        payloads, timestamp = get_encoder(codec).pack(
            to_packet(JitterFrame(data=b"\x10abc", timestamp=clock), clock)
        )
        assert payloads and timestamp == clock
