"""Relay cost per viewer: server CPU while one 30 fps publisher is watched by N viewers.

    .venv/bin/python benchmarks/media_relay.py --viewers 10,30,60 --seconds 6

Starts a relay server in a child process (loopback only), publishes a synthetic
640x360/30 fps VP8 stream over WHIP from this process, then opens WHEP viewers in steps.
At each step it measures, over a fixed window, the server's CPU (psutil), every viewer's
received frame rate, and capture-to-decode delay on two viewers that decode; the others
only count packets, so the client stays cheap enough to keep up. Prints one JSON line;
CPU per viewer is the slope of a least-squares fit of server CPU against viewer count,
and, robust to a starved client, the CPU per forwarded frame scaled to the frame rate.

On an otherwise idle machine pin the two (`--server-cpu 0 --client-cpu 1`); on a shared
one, pinning only stops the scheduler from moving them away from other load.
"""

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aioice.ice
import av
import httpx
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from rooms.media import MediaRelay, MediaSettings, StreamStatus
from rooms.media.forward import Packet
from rooms.media.synthetic import (
    VIDEO_TIME_BASE,
    Pacer,
    Peer,
    PlaybackProbe,
    StampedVideoTrack,
    post_offer,
    publish,
    watch,
)

ROOM = "bench"
LOOP_S = 2
"""Length of the pre-encoded loop; viewers wait at most this long for a keyframe, and
capture-to-decode delays must stay below it to be told apart."""
DECODING_VIEWERS = 2
HTTP_TIMEOUT_S = 30.0


def loopback_only() -> None:
    """Offer 127.0.0.1 as the only ICE candidate, so no traffic leaves the machine."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def encode_loop(source: StampedVideoTrack, frames: int, bps: int) -> list[bytes]:
    """VP8-encode `frames` stamped pictures once, a keyframe first, at a constant bitrate."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = source.width, source.height, "yuv420p"
    codec.time_base = fractions.Fraction(1, source.fps)
    codec.bit_rate = bps
    codec.gop_size = frames
    rate = str(bps)  # minrate = maxrate = bit rate: constant bitrate, like a camera feed
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": rate,
        "maxrate": rate,
        "bufsize": rate,
    }
    encoded = []
    for count in range(frames):
        picture = source.picture(count)
        picture.pts, picture.time_base = count, codec.time_base
        if count == 0:
            picture.pict_type = av.video.frame.PictureType.I
        encoded.append(b"".join(bytes(packet) for packet in codec.encode(picture)))
    return encoded


class LoopedVideo(MediaStreamTrack):
    """Replays pre-encoded frames at the frame rate, so publishing costs the generator
    almost nothing. It ignores keyframe requests: a viewer starts at the next loop."""

    kind = "video"

    def __init__(self, frames: list[bytes], fps: int) -> None:
        super().__init__()
        self._frames = frames
        self._pacer = Pacer(fps)
        self._fps = fps
        self.captured: dict[int, float] = {}
        """Frame index in the loop (= its stamp) -> when it was last sent."""

    async def recv(self) -> Packet:
        count = await self._pacer.next()
        index = count % len(self._frames)
        packet = av.Packet(self._frames[index])
        packet.pts = count * 90000 // self._fps
        packet.time_base = VIDEO_TIME_BASE
        self.captured[index] = time.monotonic()
        return packet


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# server process


class OpenAccess:
    """Anyone publishes and watches; status changes are ignored."""

    async def authorize_publish(self, request: object, room_id: str) -> str:
        return "bench-host"

    async def authorize_watch(self, request: object, room_id: str) -> str | None:
        return None

    async def stream_status_changed(self, room_id: str, status: StreamStatus) -> None:
        return None


def serve(port: int, max_viewers: int) -> None:
    import uvicorn
    from starlette.applications import Starlette

    loopback_only()
    logging.basicConfig(level=logging.WARNING, format="relay %(levelname)s %(name)s: %(message)s")
    logging.getLogger("rooms.media").setLevel(logging.INFO)
    relay = MediaRelay(OpenAccess(), MediaSettings(max_viewers_per_room=max_viewers))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await relay.close()

    app = Starlette(routes=relay.routes(), lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# client side


@dataclass
class CountingViewer:
    """A load viewer: its receiver counts decrypted RTP packets and does nothing else.

    Replacing aiortc's per-packet handling (jitter buffer, NACK, bandwidth estimation;
    a private method, benchmark only) makes a viewer cost this process a fraction of
    what it costs the relay, so one core of load generator can keep up with the relay
    under test. Frames are counted by RTP marker bits (last packet of a video frame).
    """

    frames: int = 0
    octets: int = 0

    async def handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.octets += len(packet.payload)
        if packet.marker:
            self.frames += 1


@dataclass
class Step:
    viewers: int
    server_cpu_pct: float
    client_cpu_pct: float
    server_rss_mib: float
    fps_min: float
    fps_median: float
    kbps_median: float
    frames_delivered: int
    """Frames all viewers received in the window."""
    delay_ms: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(client: httpx.AsyncClient, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await client.options(f"/whip/{ROOM}")).status_code == 204:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("relay server did not start")
        await asyncio.sleep(0.2)


def fit_slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x; returns (a, b)."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - b * mean_x, b


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    args: argparse.Namespace,
    server: psutil.Process,
    counters: list[CountingViewer],
    probes: list[PlaybackProbe],
    viewers: int,
) -> Step:
    await asyncio.sleep(args.settle)
    me = psutil.Process()
    start_frames = [c.frames for c in counters]
    start_octets = [c.octets for c in counters]
    server_cpu = server.cpu_times()
    client_cpu = me.cpu_times()
    started = time.monotonic()
    await asyncio.sleep(args.seconds)
    ended = time.monotonic()
    wall = ended - started
    server_after, client_after = server.cpu_times(), me.cpu_times()
    used_server = (server_after.user + server_after.system) - (server_cpu.user + server_cpu.system)
    used_client = (client_after.user + client_after.system) - (client_cpu.user + client_cpu.system)
    received = [c.frames - f0 for c, f0 in zip(counters, start_frames, strict=True)]
    received += [sum(started <= t < ended for t in p.arrivals) for p in probes]
    rates = [n / wall for n in received]
    kbps = [(c.octets - o0) * 8 / wall / 1000 for c, o0 in zip(counters, start_octets, strict=True)]
    delays = [d * 1000 for p in probes for d in p.delays_between(started, ended)]
    return Step(
        viewers=viewers,
        server_cpu_pct=round(100 * used_server / wall, 2),
        client_cpu_pct=round(100 * used_client / wall, 2),
        server_rss_mib=round(server.memory_info().rss / 2**20, 1),
        fps_min=round(min(rates, default=0.0), 1),
        fps_median=round(statistics.median(rates) if rates else 0.0, 1),
        kbps_median=round(statistics.median(kbps) if kbps else 0.0),
        frames_delivered=sum(received),
        delay_ms=(
            {
                "p50": round(percentile(delays, 0.5)),
                "p99": round(percentile(delays, 0.99)),
                "max": round(max(delays)),
            }
            if delays
            else {}
        ),
    )


async def run(args: argparse.Namespace, port: int, server: psutil.Process) -> dict[str, object]:
    steps_wanted = sorted({int(v) for v in args.viewers.split(",")})
    pictures = StampedVideoTrack(args.width, args.height, args.fps)
    track = LoopedVideo(encode_loop(pictures, LOOP_S * args.fps, args.kbps * 1000), args.fps)
    peers: list[Peer] = []
    counters: list[CountingViewer] = []
    probes: list[PlaybackProbe] = []
    steps: list[Step] = []
    setup_s: list[float] = []
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=HTTP_TIMEOUT_S) as client:
        await wait_ready(client)
        peers.append(await publish(client, f"/whip/{ROOM}", track, None))
        print(f"publishing {args.width}x{args.height}@{args.fps}, {args.kbps} kbps", file=sys.stderr)
        steps.append(await measure(args, server, counters, probes, 0))
        try:
            for target in steps_wanted:
                while len(peers) - 1 < target:  # one at a time, as viewers arrive
                    opened = time.monotonic()
                    peers.append(await open_viewer(client, track, counters, probes))
                    setup_s.append(time.monotonic() - opened)
                step = await measure(args, server, counters, probes, target)
                steps.append(step)
                print(json.dumps(step.__dict__), file=sys.stderr)
        finally:
            await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    base, per_viewer = fit_slope([float(s.viewers) for s in steps], [s.server_cpu_pct for s in steps])
    # Cost per forwarded frame above the publisher-only baseline, scaled to the nominal
    # frame rate: still meaningful when a loaded machine delivered fewer frames.
    per_frame = [
        (s.server_cpu_pct - steps[0].server_cpu_pct) / 100 * args.seconds / s.frames_delivered
        for s in steps[1:]
        if s.frames_delivered
    ]
    return {
        "scenario": "media_relay",
        "resolution": f"{args.width}x{args.height}",
        "fps": args.fps,
        "publisher_kbps": args.kbps,
        "window_s": args.seconds,
        "server_cpu_pct_base": round(base, 2),
        "server_cpu_pct_per_viewer": round(per_viewer, 3),
        "viewers_per_core": int((100 - base) / per_viewer) if per_viewer > 0 else None,
        "server_cpu_pct_per_viewer_by_frames": [round(c * args.fps * 100, 3) for c in per_frame],
        "whep_setup_ms": {
            "p50": round(1000 * percentile(setup_s, 0.5)),
            "max": round(1000 * max(setup_s)),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "steps": [s.__dict__ for s in steps],
    }


async def open_viewer(
    client: httpx.AsyncClient,
    track: LoopedVideo,
    counters: list[CountingViewer],
    probes: list[PlaybackProbe],
) -> Peer:
    if len(probes) < DECODING_VIEWERS:
        probe = PlaybackProbe(track)
        probes.append(probe)
        return await watch(client, f"/whep/{ROOM}", None, consume=probe.consume)
    counter = CountingViewer()
    counters.append(counter)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    receiver._handle_rtp_packet = counter.handle  # type: ignore[method-assign]
    response = await post_offer(client, f"/whep/{ROOM}", pc, None)
    if response.status_code != 201:
        await pc.close()
        response.raise_for_status()
    return Peer(pc, response.headers["location"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="10,30,60", help="viewer counts to step through")
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window")
    parser.add_argument("--settle", type=float, default=2.0, help="wait after each step")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--kbps", type=int, default=1000, help="publisher's VP8 bitrate")
    parser.add_argument("--server-cpu", type=int, help="pin the relay to this core")
    parser.add_argument("--client-cpu", type=int, help="pin this process to this core")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-viewers", type=int, default=500, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        pin(args.server_cpu)
        serve(args.serve, args.max_viewers)
        return
    loopback_only()
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port)]
    if args.server_cpu is not None:
        command += ["--server-cpu", str(args.server_cpu)]
    child = subprocess.Popen(command)
    pin(args.client_cpu)
    try:
        result = asyncio.run(run(args, port, psutil.Process(child.pid)))
    finally:
        child.terminate()
        child.wait(timeout=15)
    line = json.dumps(result)
    print(line)
    if args.json:
        with open(args.json, "w") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
