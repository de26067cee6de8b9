"""WHIP/WHEP end to end on loopback: a synthetic publisher, decoding viewers, HTTP errors.

Each test builds a small Starlette app from `MediaRelay.routes()` with a stub rooms
domain and talks to it through httpx's ASGI transport; media flows over real UDP on
127.0.0.1 between aiortc peers in this process.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import aioice.ice
import httpx
import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request

from rooms.media import MediaRelay, MediaSettings, StreamStatus
from rooms.media.synthetic import (
    Peer,
    PlaybackProbe,
    StampedVideoTrack,
    bearer,
    post_offer,
    publish,
    watch,
)

ROOM = "stage"
HOSTS = {ROOM: "alice", "other": "bob"}


class Rooms:
    """Stub rooms domain: the bearer token is the user id; 'mallory' is banned."""

    def __init__(self) -> None:
        self.events: list[tuple[str, StreamStatus]] = []
        self._changed = asyncio.Event()

    def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return header.removeprefix("Bearer ") or None

    async def authorize_publish(self, request: Request, room_id: str) -> str:
        user = self._user(request)
        if user is None:
            raise HTTPException(401, "sign in to publish")
        if room_id not in HOSTS:
            raise HTTPException(404, "no such room")
        if HOSTS[room_id] != user:
            raise HTTPException(403, "only the host publishes")
        return user

    async def authorize_watch(self, request: Request, room_id: str) -> str | None:
        if room_id not in HOSTS:
            raise HTTPException(404, "no such room")
        user = self._user(request)
        if user == "mallory":
            raise HTTPException(403, "banned")
        return user

    async def stream_status_changed(self, room_id: str, status: StreamStatus) -> None:
        self.events.append((room_id, status))
        self._changed.set()

    async def wait_for(self, event: tuple[str, StreamStatus], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while event not in self.events:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Stack:
    rooms: Rooms
    relay: MediaRelay
    client: httpx.AsyncClient
    peers: list[Peer | RTCPeerConnection] = field(default_factory=list)

    async def publish(self, track: MediaStreamTrack, room: str = ROOM) -> Peer:
        peer = await publish(self.client, f"/whip/{room}", track, HOSTS[room])
        self.peers.append(peer)
        return peer

    async def watch(
        self, consume: Callable[[MediaStreamTrack], Awaitable[None]], token: str | None = None
    ) -> Peer:
        peer = await watch(self.client, f"/whep/{ROOM}", token, consume=consume)
        self.peers.append(peer)
        return peer

    async def offer_response(
        self, url: str, token: str | None, *kinds_and_directions: tuple[str, str]
    ) -> httpx.Response:
        """POST a fresh offer; the client side stays open until the test ends."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.append(pc)
        for kind, direction in kinds_and_directions:
            pc.addTransceiver(kind, direction=direction)
        return await post_offer(self.client, url, pc, token)


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice never offers 127.0.0.1 as a host candidate; here it is the only one."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@contextlib.asynccontextmanager
async def running(settings: MediaSettings) -> AsyncIterator[Stack]:
    rooms = Rooms()
    relay = MediaRelay(rooms, settings)
    app = Starlette(routes=relay.routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://media.test") as client:
        stack = Stack(rooms, relay, client)
        try:
            yield stack
        finally:
            await relay.close()
            for peer in stack.peers:
                await peer.close()


@pytest.fixture
async def stack(loopback: None) -> AsyncIterator[Stack]:
    async with running(MediaSettings(max_viewers_per_room=3)) as stack:
        yield stack


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Poll a condition owned by aiortc internals that offer no event to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(0.05)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# media


async def test_two_viewers_see_the_publisher_promptly_and_smoothly(stack: Stack) -> None:
    track = StampedVideoTrack(320, 240, fps=30)
    await stack.publish(track)
    await stack.rooms.wait_for((ROOM, "live"))
    # Past the publisher's opening keyframe, viewers only get a picture if their
    # join is turned into a keyframe request (aiortc's own interval is ~100 s).
    await asyncio.sleep(1.5)
    probes = [PlaybackProbe(track), PlaybackProbe(track)]
    await asyncio.gather(*(stack.watch(p.consume) for p in probes))
    assert stack.relay.viewer_count(ROOM) == 2
    await asyncio.sleep(4.0)
    until = time.monotonic()
    since = until - 3.0
    for probe in probes:
        assert probe.first_frame_s is not None and probe.first_frame_s < 1.0
        assert probe.fps(since, until) >= 25
        delays = probe.delays_between(since, until)
        assert len(delays) >= 75
        assert max(delays) < 0.5, sorted(delays)[-5:]
        assert probe.unreadable == 0


async def test_keyframe_requests_reach_the_publisher(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    track = StampedVideoTrack(320, 240)
    publisher = await stack.publish(track)
    sender = publisher.pc.getSenders()[0]
    requests: list[float] = []
    stock = sender._send_keyframe

    def counted() -> None:
        requests.append(time.monotonic())
        stock()

    monkeypatch.setattr(sender, "_send_keyframe", counted)
    await stack.rooms.wait_for((ROOM, "live"))
    probe = PlaybackProbe(track)
    viewer = await stack.watch(probe.consume)
    await eventually(lambda: bool(requests) and probe.first_frame_s is not None)
    joined = len(requests)
    await asyncio.sleep(0.6)  # past the relay's keyframe quiet period
    receiver = viewer.pc.getReceivers()[0]
    (source,) = receiver.getSynchronizationSources()
    await receiver._send_rtcp_pli(source.source)  # what a browser does on picture loss
    await eventually(lambda: len(requests) > joined, timeout=2)


async def test_h264_is_relayed_as_h264(stack: Stack) -> None:
    track = StampedVideoTrack(320, 240)
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stack.peers.append(publisher)
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264"]
    publisher.addTransceiver(track, direction="sendonly").setCodecPreferences(h264[:1])
    response = await post_offer(stack.client, f"/whip/{ROOM}", publisher, "alice")
    assert response.status_code == 201
    await stack.rooms.wait_for((ROOM, "live"))
    await asyncio.sleep(1.0)  # join after the opening keyframe: needs an IDR on request
    probe = PlaybackProbe(track)
    viewer = await stack.watch(probe.consume)
    assert "H264/90000" in viewer.pc.remoteDescription.sdp
    assert "VP8/90000" not in viewer.pc.remoteDescription.sdp
    await eventually(lambda: len(probe.delays) >= 30)
    assert probe.first_frame_s is not None and probe.first_frame_s < 1.0
    assert probe.unreadable == 0


async def test_audio_is_forwarded_with_video(stack: Stack) -> None:
    publisher_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stack.peers.append(publisher_pc)
    publisher_pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    publisher_pc.addTransceiver(StampedVideoTrack(320, 240), direction="sendonly")
    response = await post_offer(stack.client, f"/whip/{ROOM}", publisher_pc, "alice")
    assert response.status_code == 201
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stack.peers.append(viewer)
    viewer.addTransceiver("audio", direction="recvonly")
    viewer.addTransceiver("video", direction="recvonly")
    received: dict[str, int] = {"audio": 0, "video": 0}

    async def count(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                received[track.kind] += 1

    tasks: list[asyncio.Task[None]] = []
    viewer.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))))
    assert (await post_offer(stack.client, f"/whep/{ROOM}", viewer, None)).status_code == 201
    await eventually(lambda: received["audio"] >= 25 and received["video"] >= 10)
    await viewer.close()
    await asyncio.wait(tasks)


async def test_publisher_leaving_ends_viewers_and_reports_offline(stack: Stack) -> None:
    track = StampedVideoTrack(320, 240)
    publisher = await stack.publish(track)
    await stack.rooms.wait_for((ROOM, "live"))
    probe = PlaybackProbe(track)
    viewer = await stack.watch(probe.consume)
    await eventually(lambda: probe.first_frame_s is not None)
    response = await stack.client.delete(publisher.location, headers=bearer("alice"))
    assert response.status_code == 200
    await stack.rooms.wait_for((ROOM, "offline"))
    assert stack.rooms.events == [(ROOM, "live"), (ROOM, "offline")]
    assert stack.relay.viewer_count(ROOM) == 0
    # the viewer's track ends (RTCP BYE), which ends its reader
    await asyncio.wait_for(asyncio.gather(*viewer.tasks), timeout=5)
    # the room is free for a new publisher
    await stack.publish(StampedVideoTrack(320, 240))
    await stack.rooms.wait_for((ROOM, "live"))


async def test_ending_the_room_stops_its_stream(stack: Stack) -> None:
    publisher = await stack.publish(StampedVideoTrack(320, 240))
    await stack.rooms.wait_for((ROOM, "live"))
    await stack.relay.end_room(ROOM)
    await stack.rooms.wait_for((ROOM, "offline"))
    response = await stack.client.delete(publisher.location, headers=bearer("alice"))
    assert response.status_code == 404
    await stack.relay.end_room(ROOM)  # nothing left: no error, no second "offline"
    assert stack.rooms.events == [(ROOM, "live"), (ROOM, "offline")]


async def test_a_publisher_closing_without_delete_goes_offline(stack: Stack) -> None:
    publisher = await stack.publish(StampedVideoTrack(320, 240))
    await stack.rooms.wait_for((ROOM, "live"))
    await publisher.pc.close()  # no DELETE: the relay notices the transport closing
    await stack.rooms.wait_for((ROOM, "offline"))


async def test_an_unconnected_session_is_dropped_after_the_timeout(loopback: None) -> None:
    async with running(MediaSettings(connect_timeout_s=0.5)) as stack:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        await pc.close()  # the answer never reaches a live peer
        response = await stack.client.post(
            f"/whip/{ROOM}",
            content=offer,
            headers={"Content-Type": "application/sdp", **bearer("alice")},
        )
        assert response.status_code == 201
        await eventually(lambda: ROOM not in stack.relay._rooms)
        assert stack.rooms.events == []  # never live, so never offline either


async def test_close_ends_every_session(stack: Stack) -> None:
    track = StampedVideoTrack(320, 240)
    await stack.publish(track)
    await stack.rooms.wait_for((ROOM, "live"))
    probe = PlaybackProbe(track)
    viewer = await stack.watch(probe.consume)
    await eventually(lambda: probe.first_frame_s is not None)
    await stack.relay.close()
    assert stack.rooms.events == [(ROOM, "live"), (ROOM, "offline")]
    assert stack.relay.viewer_count(ROOM) == 0
    response = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
    assert response.status_code == 503
    await asyncio.wait_for(asyncio.gather(*viewer.tasks), timeout=5)


# HTTP


async def test_whip_wants_an_sdp_body(stack: Stack) -> None:
    response = await stack.client.post(f"/whip/{ROOM}", json={"sdp": "v=0"}, headers=bearer("alice"))
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


@pytest.mark.parametrize(
    ("room", "token", "status"), [(ROOM, None, 401), (ROOM, "carol", 403), ("nowhere", "alice", 404)]
)
async def test_whip_is_for_the_host_only(stack: Stack, room: str, token: str | None, status: int) -> None:
    response = await stack.offer_response(f"/whip/{room}", token, ("video", "sendonly"))
    assert response.status_code == status


async def test_a_banned_user_cannot_watch(stack: Stack) -> None:
    await stack.publish(StampedVideoTrack(320, 240))
    response = await stack.offer_response(f"/whep/{ROOM}", "mallory", ("video", "recvonly"))
    assert response.status_code == 403


async def test_second_publisher_conflicts(stack: Stack) -> None:
    await stack.publish(StampedVideoTrack(320, 240))
    response = await stack.offer_response(f"/whip/{ROOM}", "alice", ("video", "sendonly"))
    assert response.status_code == 409
    assert error_code(response) == "already_publishing"


async def test_whip_answer_and_session_url(stack: Stack) -> None:
    response = await stack.offer_response(f"/whip/{ROOM}", "alice", ("video", "sendonly"))
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/sdp"
    assert "a=recvonly" in response.text
    assert "a=candidate:" in response.text  # complete answer: the server does not trickle
    assert response.headers["location"].startswith(f"/whip/{ROOM}/")
    assert "link" not in response.headers  # no ICE servers configured


class StunServer(asyncio.DatagramProtocol):
    """Answers STUN binding requests on loopback, like a public STUN server would."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        self.requests += 1
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        if self.transport is not None:
            self.transport.sendto(bytes(response), addr)


async def test_configured_ice_servers_are_used_and_advertised(loopback: None) -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(StunServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with running(MediaSettings(ice_servers=(f"stun:127.0.0.1:{port}",))) as stack:
            response = await stack.offer_response(f"/whip/{ROOM}", "alice", ("video", "sendonly"))
            assert response.status_code == 201
            assert response.headers["link"] == f'<stun:127.0.0.1:{port}>; rel="ice-server"'
            assert server.requests >= 1
            assert "typ srflx" in response.text  # the relay used the server's answer
    finally:
        transport.close()


async def test_nothing_to_watch_while_offline(stack: Stack) -> None:
    response = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
    assert response.status_code == 409
    assert error_code(response) == "offline"


async def test_viewer_cap_answers_503_with_retry_after(loopback: None) -> None:
    async with running(MediaSettings(max_viewers_per_room=1)) as stack:
        await stack.publish(StampedVideoTrack(320, 240))
        first = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
        assert first.status_code == 201
        second = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
        assert second.status_code == 503
        assert int(second.headers["retry-after"]) > 0
        assert error_code(second) == "unavailable"
        assert (await stack.client.delete(first.headers["location"])).status_code == 200
        third = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
        assert third.status_code == 201


async def test_only_the_owner_ends_a_session(stack: Stack) -> None:
    publisher = await stack.publish(StampedVideoTrack(320, 240))
    watched = await stack.offer_response(f"/whep/{ROOM}", "dave", ("video", "recvonly"))
    guest = await stack.offer_response(f"/whep/{ROOM}", None, ("video", "recvonly"))
    viewer_url, guest_url = watched.headers["location"], guest.headers["location"]

    assert (await stack.client.delete(viewer_url, headers=bearer("erin"))).status_code == 403
    assert (await stack.client.delete(viewer_url)).status_code == 403
    assert (await stack.client.delete(viewer_url, headers=bearer("dave"))).status_code == 200
    assert (await stack.client.delete(viewer_url, headers=bearer("dave"))).status_code == 404
    # a guest's session URL is its only credential
    assert (await stack.client.delete(guest_url, headers=bearer("erin"))).status_code == 200

    assert (await stack.client.delete(publisher.location, headers=bearer("bob"))).status_code == 403
    assert (await stack.client.delete(publisher.location)).status_code == 401
    assert (await stack.client.delete(publisher.location, headers=bearer("alice"))).status_code == 200


async def test_patch_is_refused_as_rfc_9725_allows(stack: Stack) -> None:
    publisher = await stack.publish(StampedVideoTrack(320, 240))
    fragment = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
    response = await stack.client.patch(publisher.location, content="a=ice-ufrag:x", headers=fragment)
    assert response.status_code == 501
    assert "trickle ICE" in response.json()["error"]["message"]
    missing = await stack.client.patch(f"/whip/{ROOM}/nope", content="", headers=fragment)
    assert missing.status_code == 404


async def test_methods_outside_the_protocol(stack: Stack) -> None:
    assert (await stack.client.get(f"/whip/{ROOM}")).status_code == 405
    assert (await stack.client.put(f"/whep/{ROOM}/x")).status_code == 405
    options = await stack.client.options(f"/whep/{ROOM}")
    assert options.status_code == 204
    assert options.headers["accept-post"] == "application/sdp"


async def test_bad_offers(stack: Stack) -> None:
    sdp = {"Content-Type": "application/sdp", **bearer("alice")}
    garbage = await stack.client.post(f"/whip/{ROOM}", content="hello", headers=sdp)
    assert garbage.status_code == 400
    huge = await stack.client.post(f"/whip/{ROOM}", content="v=0\r\n" * 20000, headers=sdp)
    assert huge.status_code == 413
    receive_only = await stack.offer_response(f"/whip/{ROOM}", "alice", ("video", "recvonly"))
    assert receive_only.status_code == 400
    two_videos = await stack.offer_response(
        f"/whip/{ROOM}", "alice", ("video", "sendonly"), ("video", "sendonly")
    )
    assert two_videos.status_code == 406
    assert ROOM not in stack.relay._rooms  # refused offers leave no publisher behind


async def test_damaged_offers_get_a_client_error_never_a_crash(stack: Stack) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stack.peers.append(pc)
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    lines = pc.localDescription.sdp.splitlines()
    damaged = [lines[:i] + lines[i + 1 :] for i in range(len(lines))]  # each line dropped
    damaged += [lines[:i] for i in range(1, len(lines), 7)]  # truncated
    damaged += [[line.replace(":", "", 1) for line in lines]]  # every attribute mangled
    headers = {"Content-Type": "application/sdp", **bearer("alice")}
    statuses = set()
    for variant in damaged:
        body = "\r\n".join(variant) + "\r\n"
        response = await stack.client.post(f"/whip/{ROOM}", content=body, headers=headers)
        statuses.add(response.status_code)
        assert response.status_code in (201, 400, 406), (response.status_code, response.text)
        if response.status_code == 201:
            await stack.client.delete(response.headers["location"], headers=bearer("alice"))
    assert {400, 201} <= statuses
