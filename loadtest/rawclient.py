"""A WebSocket client connection that parses frames only while it is being set up.

The handshake and the few setup messages (subscribe, join) go through websockets'
Sans-I/O `ClientProtocol`. Once `count()` is called the connection stops parsing: each
read goes straight to a `MarkerCounter` and the counts to a callback. That is the receive
path of connections that only listen, where per-frame parsing in Python would cost the
generator more than the server spends sending.

Nothing marked may arrive before `count()`: the runs subscribe everyone first and only
then start sending, so bytes the parser had buffered at the switch carry no marker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from loadtest.counting import MarkerCounter

MAX_SETUP_FRAME = 16 * 1024 * 1024
"""Setup replies carry channel snapshots; allow generously sized frames."""

PING = Frame(Opcode.PING, b"").serialize(mask=True, extensions=[])
KEEPALIVE_S = 15.0
"""How often listening connections ping: below the 20 s after which servers such as livemart
start asking, and far below the time after which they give up on a silent client."""

OnCount = Callable[["RawConnection", int, list[tuple[str, int]]], None]
"""Called per read that completed markers: (connection, markers, sampled (lane, sent_us))."""


class HandshakeFailed(Exception):
    """The server refused the upgrade; `status` is its HTTP status (0 if it never answered)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status


class RawConnection(asyncio.Protocol):
    def __init__(self, url: str, subprotocols: Sequence[str]) -> None:
        self.ws = ClientProtocol(
            parse_uri(url),
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            max_size=MAX_SETUP_FRAME,
        )
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[Response] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        """Close code the server sent, if one was seen; None while open or after a bare drop."""
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        """Set while `recv` waits: a message or the close wakes it."""
        self._fragments: list[bytes] = []
        self.counter: MarkerCounter | None = None
        self._on_count: OnCount | None = None
        self._last = b""
        """The latest read while counting: a close frame, if any, ends it."""

    @classmethod
    async def open(
        cls, host: str, port: int, url: str, subprotocols: Sequence[str] = (), *, timeout_s: float
    ) -> RawConnection:
        """Connect and complete the handshake; raises HandshakeFailed, OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(lambda: cls(url, subprotocols), host, port)
            try:
                await conn.opened
            except BaseException:
                conn.abort()
                raise
        return conn

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    @property
    def alive(self) -> bool:
        return not self.closed.done()

    # --- setup phase: whole messages ---------------------------------------------------

    def send(self, message: bytes, *, text: bool) -> None:
        """Send one message (setup only; counting connections do not talk)."""
        if text:
            self.ws.send_text(message)
        else:
            self.ws.send_binary(message)
        self._flush()

    async def recv(self) -> bytes:
        """The next whole message; ConnectionError if the socket closes first."""
        while not self._messages:
            if self.closed.done():
                raise ConnectionError(f"closed ({self.close_code or 1006})")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._messages.popleft()

    # --- counting phase ----------------------------------------------------------------

    def count(self, counter: MarkerCounter, on_count: OnCount) -> None:
        """From now on, scan reads for markers instead of parsing frames."""
        self.counter = counter
        self._on_count = on_count
        self._messages.clear()

    def ping(self) -> None:
        """Tell the server the client is alive (servers cut connections that stay silent).

        Counting connections never answer the server's pings, so they ping on their own;
        the pong that comes back carries no marker and is counted as nothing.
        """
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(PING)

    def close(self) -> None:
        """Send a close frame and hang up without waiting for the server's answer."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.counter is None:
            with contextlib.suppress(Exception):
                self.ws.send_close(1000)
                self._flush()
        else:
            self.transport.write(
                Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True, extensions=[])
            )
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        counter = self.counter
        if counter is not None:
            self._last = data
            found = counter.feed(data)
            if found and self._on_count is not None:
                samples = counter.samples
                if samples:
                    counter.samples = []
                self._on_count(self, found, samples)
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self._on_response(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            if self.counter is not None:
                self.close_code = trailing_close_code(self._last)
            elif self.ws.close_rcvd is not None:
                self.close_code = self.ws.close_rcvd.code
        if not self.opened.done():
            self.opened.set_exception(
                HandshakeFailed(0, "connection closed during the handshake")
                if self.ws.handshake_exc is None
                else self.ws.handshake_exc
            )
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    # --- internals -----------------------------------------------------------------------

    def _on_response(self, response: Response) -> None:
        if self.opened.done():
            return
        if self.ws.state is State.OPEN:
            self.opened.set_result(response)
        else:
            reason = response.reason_phrase if response.status_code != 101 else str(self.ws.handshake_exc)
            self.opened.set_exception(HandshakeFailed(response.status_code, reason))

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                self._messages.append(b"".join(self._fragments))
                self._fragments = []
                self._wake()
        elif frame.opcode is Opcode.CLOSE and self.ws.close_rcvd is not None:
            self.close_code = self.ws.close_rcvd.code

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:
                transport.close()
                return


async def keep_alive(connections: Sequence[RawConnection], every_s: float = KEEPALIVE_S) -> None:
    """Ping every connection in `connections` (a live list) each `every_s`, until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        for conn in connections:
            conn.ping()


def trailing_close_code(data: bytes) -> int:
    """The code of a close frame that ends `data`, else 1006 (closed without one).

    A server's close frame is the last thing it writes: opcode byte 0x88, a length under
    126 (unmasked), a two-byte code and a short reason.
    """
    for start in range(max(0, len(data) - 127), len(data) - 3):
        if data[start] == 0x88 and data[start + 1] == len(data) - start - 2:
            return int.from_bytes(data[start + 2 : start + 4], "big")
    return 1006
