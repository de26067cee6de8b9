"""One generator WebSocket: commands with replies matched by id, and a reader that hands
frames to the scenario without decoding the ones it only needs to count."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from loadtest import frames, markers
from loadtest.plan import Member
from loadtest.stats import now_us

CLOSE_TIMEOUT_S = 2.0
MAX_FRAME = 16 * 1024 * 1024
"""Subscribe replies carry a channel snapshot; allow generously sized frames."""


class Sink(Protocol):
    """Where a client's incoming traffic goes."""

    def deliveries(self, client: Client, hits: list[tuple[str, int]], received_us: int) -> None:
        """Markers found in a frame the client did not decode."""

    def push(self, client: Client, push: dict[str, Any], received_us: int) -> None:
        """A decoded push (only for clients that parse pushes)."""

    def problem(self, client: Client, code: str) -> None:
        """Something went wrong outside a request (bad frame, unexpected close)."""


class ReplyTimeout(Exception):
    """No reply within the request's timeout."""


class Client:
    def __init__(
        self,
        ws: ClientConnection,
        protocol: frames.Protocol,
        member: Member,
        sink: Sink,
        *,
        parse_pushes: bool,
        reply_timeout_s: float,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.member = member
        self.sink = sink
        self.parse_pushes = parse_pushes
        """False: count markers by byte scan; True: decode every frame (seq checks)."""
        self.reply_timeout_s = reply_timeout_s
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._closing = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        ws_url: str,
        token: str,
        protocol: frames.Protocol,
        member: Member,
        sink: Sink,
        *,
        parse_pushes: bool,
        open_timeout_s: float,
        reply_timeout_s: float,
    ) -> Client:
        """Handshake; raises on failure (see `connect_error_code`)."""
        ws = await connect(
            f"{ws_url}?token={quote(token)}",
            subprotocols=[Subprotocol(frames.SUBPROTOCOLS[protocol])],
            compression=None,  # the generator must stay cheap per connection
            open_timeout=open_timeout_s,
            ping_interval=None,  # measure the server, do not police it
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=MAX_FRAME,
            proxy=None,
        )
        if ws.subprotocol != frames.SUBPROTOCOLS[protocol]:
            await ws.close()
            raise InvalidHandshake(f"server did not accept {frames.SUBPROTOCOLS[protocol]}")
        return cls(ws, protocol, member, sink, parse_pushes=parse_pushes, reply_timeout_s=reply_timeout_s)

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its reply object (`ok` or `error`).

        Raises ReplyTimeout after `reply_timeout_s`, or ConnectionClosed when the socket goes away first.
        """
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            frame = frames.encode(self.protocol, {"id": rid, "op": op, **args})
            await self.ws.send(frame, text=self.protocol == "json")
            async with asyncio.timeout(self.reply_timeout_s):
                return await future
        except TimeoutError:
            raise ReplyTimeout(op) from None
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        self._closing = True
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        try:
            while True:
                self._handle(await self.ws.recv(decode=False))
        except ConnectionClosed as exc:
            if not self._closing:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.sink.problem(self, f"closed_{code}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(exc)

    def _handle(self, frame: bytes) -> None:
        received = now_us()
        if not self.parse_pushes:
            hits = markers.scan(frame)
            if hits:
                # Only pushes carry markers once subscribed: no reply of comment, reserve or
                # group.send echoes the text, and subscribe ran before any marker was sent.
                self.sink.deliveries(self, hits, received)
                return
            if not self._pending:
                return  # a push the scenario does not measure (viewer counts, likes, stock)
        try:
            objects = frames.decode(self.protocol, frame)
        except frames.BadFrame:
            self.sink.problem(self, "bad_frame")
            return
        for obj in objects:
            rid = obj.get("id")
            if "ch" not in obj and isinstance(rid, int):
                future = self._pending.get(rid)
                if future is not None and not future.done():
                    future.set_result(obj)
            elif self.parse_pushes:
                self.sink.push(self, obj, received)


def connect_error_code(exc: BaseException) -> str:
    """Error code for a failed handshake, as counted in the summary's `errors`."""
    if isinstance(exc, InvalidStatus):
        return f"connect_http_{exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, InvalidHandshake):
        return "connect_handshake"
    return "connect_error"
