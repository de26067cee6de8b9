"""The process-wide owner of every WHIP and WHEP peer connection."""

import asyncio
import logging
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import TypeVar

from aiortc import RTCPeerConnection
from starlette.routing import BaseRoute

from .access import MediaAccess
from .broadcast import Broadcast
from .errors import MediaError, NotOwner, RoomBusy, RoomOffline, SessionNotFound, Unavailable
from .forward import ForwardTrack
from .hooks import check_hooks, request_keyframe
from .peers import answer_ingest, answer_playback, playback_kinds
from .sessions import Role, Room, Session
from .settings import MediaSettings
from .status import StatusNotifier
from .tasks import TaskSet

logger = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_FRAMES = {"video": 15, "audio": 25}
"""Per-viewer queue bound, about half a second of each kind; beyond it frames are dropped."""

CLOSE_TIMEOUT_S = 5.0
"""How long `close()` waits for peer connections to shut down before cancelling."""


class MediaRelay:
    """Accepts one publisher per room and forwards its encoded media to the room's viewers.

    Nothing is decoded or re-encoded: each viewer costs packetization, SRTP and a UDP
    send per packet. All state is in this process; see docs/media.md for scaling out.
    It is a module of the server (realtime.server.Module): routes, and sessions closed
    on shutdown; it owns no tables.
    """

    migrations: Path | None = None

    def __init__(self, access: MediaAccess, settings: MediaSettings | None = None) -> None:
        check_hooks()
        self.access = access
        self.settings = settings or MediaSettings()
        self._rooms: dict[str, Room] = {}
        self._tasks = TaskSet()
        self._status = StatusNotifier(access.stream_status_changed)
        self._closing = False

    def routes(self) -> list[BaseRoute]:
        from .routes import MediaEndpoints  # routes refers back to this class

        return MediaEndpoints(self).routes()

    async def start(self) -> None:
        """Nothing to start: peer connections are made per request."""

    async def stop(self) -> None:
        await self.close()

    def viewer_count(self, room_id: str) -> int:
        room = self._rooms.get(room_id)
        return len(room.viewers) if room else 0

    async def publish(self, room_id: str, owner: str, offer: str) -> Session:
        """Start ingest for a room; the returned session carries the SDP answer."""
        self._check_open()
        if room_id in self._rooms:
            raise RoomBusy(f"room {room_id} already has a publisher")
        session = self._new_session(room_id, "publisher", owner)
        room = Room(publisher=session, broadcast=Broadcast(partial(self._ask_keyframe, session)))
        self._rooms[room_id] = room
        ingest = await self._negotiate(
            session,
            answer_ingest(session.pc, offer, room.broadcast.push),
            Unavailable("the relay closed the session during negotiation"),
        )
        room.broadcast.codecs = ingest.codecs
        session.answer = ingest.answer
        self._arm_deadline(session)
        return session

    async def watch(self, room_id: str, owner: str | None, offer: str) -> Session:
        """Start playback of a room's stream; the returned session carries the SDP answer."""
        self._check_open()
        room = self._rooms.get(room_id)
        if room is None or not room.broadcast.codecs:
            raise RoomOffline(f"room {room_id} is not live")
        if len(room.viewers) >= self.settings.max_viewers_per_room:
            raise Unavailable(f"room {room_id} has reached its viewer limit")
        codecs = dict(room.broadcast.codecs)
        kinds = playback_kinds(offer, codecs)
        session = self._new_session(room_id, "viewer", owner)
        session.tracks = [ForwardTrack(kind, QUEUE_FRAMES[kind]) for kind in kinds]
        room.viewers[session.id] = session
        session.answer = await self._negotiate(
            session,
            answer_playback(session.pc, offer, codecs, session.tracks, room.broadcast.request_keyframe),
            RoomOffline(f"room {room_id} stopped publishing"),
        )
        self._arm_deadline(session)
        return session

    def find(self, role: Role, room_id: str, session_id: str) -> Session:
        room = self._rooms.get(room_id)
        session: Session | None = None
        if room is not None and role == "publisher" and room.publisher.id == session_id:
            session = room.publisher
        elif room is not None and role == "viewer":
            session = room.viewers.get(session_id)
        if session is None or session.ended:
            raise SessionNotFound("no such session")
        return session

    async def end_session(self, role: Role, room_id: str, session_id: str, caller: str | None) -> None:
        """End a session on its owner's request (a guest's session: whoever has its URL)."""
        session = self.find(role, room_id, session_id)
        if session.owner is not None and session.owner != caller:
            raise NotOwner("only the session's owner may end it")
        await self._end(session)

    async def end_room(self, room_id: str) -> None:
        """Stop the room's publisher and viewers, e.g. when the host ends the room."""
        room = self._rooms.get(room_id)
        if room is not None:
            await self._end(room.publisher)

    async def close(self) -> None:
        """Refuse new sessions, end every session, then deliver the last status changes."""
        self._closing = True
        ends = [asyncio.ensure_future(self._end(r.publisher)) for r in list(self._rooms.values())]
        if ends:
            _, pending = await asyncio.wait(ends, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._tasks.close(CLOSE_TIMEOUT_S)
        await self._status.drain()

    async def _negotiate(self, session: Session, negotiation: Awaitable[T], gone: MediaError) -> T:
        """Await an offer/answer; on failure, or if the session was ended meanwhile
        (publisher left, relay closing), tear it down and raise."""
        try:
            result = await negotiation
        except Exception as exc:
            was_ended = session.ended
            await self._end(session)
            if was_ended:
                raise gone from exc
            raise
        except asyncio.CancelledError:
            await self._end(session)
            raise
        if session.ended:
            raise gone
        return result

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable("the media relay is shutting down")

    def _new_session(self, room_id: str, role: Role, owner: str | None) -> Session:
        session = Session(room_id, role, owner, RTCPeerConnection(self.settings.rtc_configuration()))
        session.pc.on("connectionstatechange", partial(self._on_state, session))
        return session

    def _arm_deadline(self, session: Session) -> None:
        if session.pc.connectionState != "connected":
            loop = asyncio.get_running_loop()
            session.deadline = loop.call_later(self.settings.connect_timeout_s, self._expire, session)

    def _expire(self, session: Session) -> None:
        session.deadline = None
        if not session.ended and session.pc.connectionState != "connected":
            logger.info("%s %s did not connect in time", session.role, session.id)
            self._tasks.spawn(self._end(session))

    def _on_state(self, session: Session) -> None:
        state = session.pc.connectionState
        if state in ("failed", "closed"):
            if not session.ended:
                logger.info(
                    "%s %s of room %s: connection %s", session.role, session.id, session.room_id, state
                )
                self._tasks.spawn(self._end(session))
            return
        room = self._rooms.get(session.room_id)
        if state != "connected" or session.ended or room is None:
            return
        if session.deadline is not None:
            session.deadline.cancel()
            session.deadline = None
        if session.role == "viewer":
            room.broadcast.attach(session.tracks)
        elif room.publisher is session and not room.live:
            room.live = True
            self._status.notify(session.room_id, "live")

    def _ask_keyframe(self, publisher: Session) -> None:
        if publisher.ended:
            return
        for transceiver in publisher.pc.getTransceivers():
            if transceiver.kind == "video":
                self._tasks.spawn(request_keyframe(transceiver.receiver))

    async def _end(self, session: Session) -> None:
        if session.ended:
            return
        room = self._rooms.get(session.room_id)
        if session.role == "publisher" and room is not None and room.publisher is session:
            await self._end_room(room)
            return
        session.ended = True
        if session.deadline is not None:
            session.deadline.cancel()
        if room is not None and room.viewers.get(session.id) is session:
            del room.viewers[session.id]
            room.broadcast.detach(session.tracks)
        for track in session.tracks:
            track.end()
        await session.pc.close()

    async def _end_room(self, room: Room) -> None:
        """Publisher gone: report offline first, then close every connection of the room."""
        publisher = room.publisher
        del self._rooms[publisher.room_id]
        sessions = [publisher, *room.viewers.values()]
        room.viewers.clear()
        for session in sessions:
            session.ended = True
            if session.deadline is not None:
                session.deadline.cancel()
        room.broadcast.close()
        if room.live:
            room.live = False
            self._status.notify(publisher.room_id, "offline")
        results = await asyncio.gather(*(s.pc.close() for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                logger.warning("closing %s %s failed: %r", session.role, session.id, result)
