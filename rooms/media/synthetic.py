"""Camera-free WHIP/WHEP clients for tests and benchmarks.

The publisher's frames carry their own sequence number in pixels (a row of black/white
blocks, then its complement as a check), and the track remembers when each was captured,
so a viewer in the same process can tell capture-to-decode delay from a decoded frame.
"""

import asyncio
import fractions
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from .hooks import FrameSink, intercept_encoded_frames

STAMP_BITS = 16
BLOCK = 20
"""Stamp block side in pixels: large enough to survive VP8 at low bitrates."""
REMEMBERED_FRAMES = 1024
"""Capture times kept for delay lookups (34 s at 30 fps)."""
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


def draw_stamp(image: np.ndarray, number: int) -> None:
    """Write `number` (16 bits) and its complement as blocks at the top of a luma plane."""
    bits = [(number >> i) & 1 for i in range(STAMP_BITS)]
    for row, values in enumerate((bits, [1 - b for b in bits])):
        for i, bit in enumerate(values):
            y, x = row * BLOCK, i * BLOCK
            image[y : y + BLOCK, x : x + BLOCK] = 255 if bit else 0


def read_stamp(frame: VideoFrame) -> int | None:
    """The number drawn by `draw_stamp`, or None if the blocks do not check out."""
    gray = frame.to_ndarray(format="gray")
    if gray.shape[0] < 2 * BLOCK or gray.shape[1] < STAMP_BITS * BLOCK:
        return None
    half = BLOCK // 2
    quarter = BLOCK // 4
    rows = []
    for row in range(2):
        y = row * BLOCK + half
        centres = [
            gray[y - quarter : y + quarter, i * BLOCK + half - quarter : i * BLOCK + half + quarter]
            for i in range(STAMP_BITS)
        ]
        rows.append([int(c.mean() > 127) for c in centres])
    if any(a == b for a, b in zip(rows[0], rows[1], strict=True)):
        return None
    return sum(bit << i for i, bit in enumerate(rows[0]))


class Pacer:
    """Yields frame numbers at a steady rate from the first call on (no catch-up bursts
    beyond what the event loop's own delays cause)."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self._count = 0
        self._start: float | None = None

    async def next(self) -> int:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._count / self.fps - loop.time()))
        self._count += 1
        return self._count - 1


class CaptureLog(Protocol):
    """A source that remembers when each stamped frame was captured."""

    @property
    def captured(self) -> Mapping[int, float]: ...


class StampedVideoTrack(MediaStreamTrack):
    """Paced synthetic video: a moving texture (so the encoder has work) and a stamp."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: int = 30) -> None:
        super().__init__()
        if width < STAMP_BITS * BLOCK or height < 2 * BLOCK:
            raise ValueError(f"frames must be at least {STAMP_BITS * BLOCK}x{2 * BLOCK}")
        self.width, self.height, self.fps = width, height, fps
        self.captured: OrderedDict[int, float] = OrderedDict()
        """Stamp -> `time.monotonic()` when the frame was produced."""
        self._pacer = Pacer(fps)
        rng = np.random.default_rng(7)
        ramp = np.tile(np.linspace(40, 215, width, dtype=np.float32), (height, 1))
        noise = rng.normal(0, 12, (height, width)).astype(np.float32)
        self._texture = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        self._chroma = np.full((height // 2, width), 128, dtype=np.uint8)

    def picture(self, count: int) -> VideoFrame:
        """Frame number `count`: the texture moved along, stamped with `count` mod 2^16."""
        luma = np.roll(self._texture, 4 * count, axis=1)
        draw_stamp(luma, count % (1 << STAMP_BITS))
        frame = VideoFrame.from_ndarray(np.vstack([luma, self._chroma]), format="yuv420p")
        frame.pts = count * 90000 // self.fps
        frame.time_base = VIDEO_TIME_BASE
        return frame

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        count = await self._pacer.next()
        frame = self.picture(count)
        self.captured[count % (1 << STAMP_BITS)] = time.monotonic()
        while len(self.captured) > REMEMBERED_FRAMES:
            self.captured.popitem(last=False)
        return frame


@dataclass
class PlaybackProbe:
    """Decodes a viewer's video and records when frames arrive and how late they are."""

    source: CaptureLog
    started: float = field(default_factory=time.monotonic)
    first_frame_s: float | None = None
    """Seconds from the probe's creation (just before the WHEP POST) to the first frame."""
    arrivals: list[float] = field(default_factory=list)
    delays: list[tuple[float, float]] = field(default_factory=list)
    """(arrival, capture-to-decode seconds) of each frame whose stamp was read."""
    unreadable: int = 0

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if self.first_frame_s is None:
                self.first_frame_s = now - self.started
            self.arrivals.append(now)
            stamp = read_stamp(frame) if isinstance(frame, VideoFrame) else None
            captured = self.source.captured.get(stamp) if stamp is not None else None
            if captured is None:
                self.unreadable += 1
            else:
                self.delays.append((now, now - captured))

    def fps(self, since: float, until: float) -> float:
        return sum(since <= t < until for t in self.arrivals) / (until - since)

    def delays_between(self, since: float, until: float) -> list[float]:
        return [delay for t, delay in self.delays if since <= t < until]


@dataclass
class Peer:
    """A client-side peer connection and the session URL the server gave it."""

    pc: RTCPeerConnection
    location: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def post_offer(
    client: httpx.AsyncClient, url: str, pc: RTCPeerConnection, token: str | None
) -> httpx.Response:
    """Send our complete offer (all candidates, no trickle) and apply a 201 answer."""
    await pc.setLocalDescription(await pc.createOffer())
    response = await client.post(
        url,
        content=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp", **bearer(token)},
    )
    if response.status_code == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return response


async def publish(client: httpx.AsyncClient, url: str, track: MediaStreamTrack, token: str | None) -> Peer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(track, direction="sendonly")
    response = await post_offer(client, url, pc, token)
    if response.status_code != 201:
        await pc.close()
        response.raise_for_status()
    return Peer(pc, response.headers["location"])


async def watch(
    client: httpx.AsyncClient,
    url: str,
    token: str | None,
    *,
    consume: Callable[[MediaStreamTrack], Awaitable[None]] | None = None,
    sink: FrameSink | None = None,
) -> Peer:
    """Open a video-only WHEP session whose frames go to exactly one place: `consume`
    decodes them (a real viewer), `sink` gets them still encoded (a cheap load viewer).

    One is required because aiortc queues received frames without bound otherwise.
    """
    if (consume is None) == (sink is None):
        raise ValueError("pass exactly one of consume and sink")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    tasks: list[asyncio.Task[None]] = []
    if sink is not None:
        intercept_encoded_frames(transceiver.receiver, sink)
    elif consume is not None:
        handler = consume
        pc.on("track", lambda track: tasks.append(asyncio.ensure_future(handler(track))))
    response = await post_offer(client, url, pc, token)
    if response.status_code != 201:
        await pc.close()
        response.raise_for_status()
    return Peer(pc, response.headers["location"], tasks)
