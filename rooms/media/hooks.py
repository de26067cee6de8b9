"""Every use of aiortc internals lives here, checked against the pinned version.

aiortc's receiver always decodes and its sender's keyframe request only reaches an
encoder. A relay that forwards encoded packets needs three private entry points:

* the receiver's decoder input queue (`_RTCRtpReceiver__decoder_queue`), which gets
  `(codec, JitterFrame)` for every complete encoded frame and `None` on stop;
* `RTCRtpReceiver._send_rtcp_pli(media_ssrc)`, to ask the publisher for a keyframe;
* `RTCRtpSender._send_keyframe()`, which the sender calls on a viewer's PLI or FIR.

`tests/test_media_hooks.py` exercises each of them on real aiortc objects, so an
upgrade that changes them fails there instead of silently freezing video.
"""

import logging
import queue
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

logger = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
"""The only aiortc release these hooks were verified against."""

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"

FrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]


def check_hooks() -> None:
    """Refuse to run on an aiortc whose internals were not verified."""
    if aiortc.__version__ != PINNED_AIORTC:
        raise RuntimeError(
            f"rooms.media relies on aiortc {PINNED_AIORTC} internals, found "
            f"{aiortc.__version__}; re-run tests/test_media_hooks.py and update the pin"
        )
    for cls, name in (
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpSender, "_send_keyframe"),
        (RTCRtpSender, "_handle_rtcp_packet"),
    ):
        if not callable(getattr(cls, name, None)):
            raise RuntimeError(f"aiortc {cls.__name__}.{name} is missing")


class _SinkQueue(queue.Queue[Any]):
    """Stands in for the decoder queue: frames go to the sink on the event loop thread.

    The receiver puts frames from its RTP handler (a coroutine on the loop), so the sink
    runs there too. Only the stop marker (None) is queued, to release the decoder
    thread aiortc still starts and which otherwise just waits.
    """

    def __init__(self, sink: FrameSink) -> None:
        super().__init__()
        self._sink = sink
        self._failed = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
            return
        codec, frame = item
        try:
            self._sink(codec, frame)
        except Exception:
            # Raising here would end aiortc's receive loop and with it the whole peer
            # connection; lose the frame instead, and say so once.
            if not self._failed:
                self._failed = True
                logger.exception("dropping frames: the frame sink failed")


def intercept_encoded_frames(receiver: RTCRtpReceiver, sink: FrameSink) -> None:
    """Route the receiver's complete encoded frames to `sink` instead of a decoder.

    Must run before the receiver starts (aiortc starts it once DTLS connects, after
    `setLocalDescription`), because `receive()` hands the queue to the decoder thread.
    """
    if not hasattr(receiver, _DECODER_QUEUE):
        raise RuntimeError("aiortc RTCRtpReceiver has no decoder queue to replace")
    if getattr(receiver, _DECODER_THREAD, None) is not None:
        raise RuntimeError("receiver already started; intercept before it connects")
    setattr(receiver, _DECODER_QUEUE, _SinkQueue(sink))


async def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI for each SSRC heard in the last 10 s (the media SSRC, maybe its RTX).

    A PLI naming the RTX SSRC is ignored by senders, so no SDP parsing is needed to
    tell the two apart.
    """
    for source in receiver.getSynchronizationSources():
        await receiver._send_rtcp_pli(source.source)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the remote peer sends PLI or FIR for this sender's stream.

    The stock method only flags the sender's encoder, which never runs for packets.
    """
    sender._send_keyframe = callback  # type: ignore[method-assign]
