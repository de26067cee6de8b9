"""The WebSocket gateway: the one module that touches client sockets.

uvicorn serves HTTP and, on an upgrade request, hands the raw socket to
:class:`Connection` (passed to uvicorn as its ``ws`` protocol class). The handshake
and every frame but plain commands are parsed by websockets' Sans-I/O
:class:`ServerProtocol` (commands are cut out by :mod:`.framing`);
outgoing pushes bypass it: the hub writes pre-framed bytes through
:meth:`Connection.send`, the single write path that owns the bounded buffer and the
slow-client cut. There is no task per connection: a command whose handler answers at
once is answered inside ``data_received``; a short-lived worker runs only while a
command waits for I/O and others queue behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .auth import GUEST, Identity, TokenAuthority
from .broker import StreamPosition
from .codec import BY_NAME, JSON, Codec
from .commands import Command, CommandError, parse_command
from .config import Settings
from .errors import CloseCode, ProtocolError
from .framing import FrameSplitter
from .metrics import Metrics
from .node import Node, Reply
from .ratelimit import TokenBucket

log = logging.getLogger("livemart.gateway")

#: How long a closing connection may take to finish the close handshake.
CLOSE_TIMEOUT_S = 2.0


class Gateway:
    """Shared state of every connection in the process."""

    def __init__(self, node: Node, tokens: TokenAuthority, settings: Settings, metrics: Metrics) -> None:
        self.node = node
        self.tokens = tokens
        self.settings = settings
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.per_ip: dict[str, int] = {}
        self.per_user: dict[str, int] = {}
        #: Set by the server on shutdown: new upgrades are refused.
        self.draining = False

    def protocol_factory(self, **uvicorn_kwargs: Any) -> Connection:
        """Called by uvicorn with its config/server_state/app_state keywords."""
        return Connection(self, uvicorn_kwargs["server_state"])

    async def keepalive(self) -> None:
        """Run forever: ping quiet connections, close the ones that stay silent.

        One sweep over all connections every few seconds, instead of a timer per
        connection: a hundred thousand idle viewers cost one loop here.
        """
        settings = self.settings
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(settings.ping_interval_s, settings.idle_timeout_s) / 2)
            now = loop.time()
            for conn in list(self.connections):
                silent = now - conn.last_rx
                if silent > settings.idle_timeout_s:
                    conn.close(CloseCode.IDLE_TIMEOUT, "idle: nothing received in time")
                elif silent > settings.ping_interval_s:
                    conn.ping()

    def close_all(self, code: int, reason: str) -> None:
        self.draining = True
        for conn in list(self.connections):
            conn.close(code, reason)


class Connection(asyncio.Protocol):
    """One client socket: handshake, command intake, and the write path."""

    def __init__(self, gateway: Gateway, server_state: Any) -> None:
        self.gateway = gateway
        #: uvicorn's connection registry, so its shutdown waits for us.
        self._server_connections: set[Any] = server_state.connections
        self.ws = ServerProtocol(
            subprotocols=[Subprotocol(name) for name in BY_NAME],
            select_subprotocol=_select_subprotocol,
            max_size=gateway.settings.max_frame_bytes,
        )
        self.transport: asyncio.Transport | None = None
        self.codec: Codec = JSON
        self.identity: Identity = GUEST
        self.user_id: str | None = None
        self.ip = ""
        #: Channels this connection is subscribed to.
        self.channels: set[str] = set()
        self._open = False
        self._closing = False
        self._fragments: list[bytes] | None = None
        #: Splits frames once the handshake is done; None before, and after a frame
        #: only websockets may handle (then it parses the rest of the stream).
        self._frames: FrameSplitter | None = None
        #: The last bytes of the request so far, to find its end across reads.
        self._head_tail = b""
        #: Commands waiting for the worker, with their arrival times.
        self._inbox: deque[tuple[Command, float]] = deque()
        self._worker: asyncio.Task[None] | None = None
        #: The handler coroutine handed to a worker that has not taken its first step.
        self._pending: Coroutine[Any, Any, Reply] | None = None
        self._rate = TokenBucket(gateway.settings.command_rate_per_s, gateway.settings.command_burst)
        self._joins: list[tuple[str, StreamPosition]] = []
        self._close_timer: asyncio.TimerHandle | None = None
        #: Loop time of the last bytes from the client (any frame, pong included).
        self.last_rx = asyncio.get_running_loop().time()

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if isinstance(peer, tuple) else ""
        self._server_connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        if self._frames is not None:
            self._frames_received(data)
            return
        if not self._open and not self._closing:
            # The request's end: what follows it is frames, to be split from the start.
            joined = self._head_tail + data
            end = joined.find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(self._head_tail)
                self._to_protocol(data[:cut])
                if self._open and not self._closing:
                    limit = self.gateway.settings.max_frame_bytes
                    self._frames = FrameSplitter(self.codec.opcode.value, limit)
                    if cut < len(data):
                        self._frames_received(data[cut:])
                    return
                data = data[cut:]
            else:
                self._head_tail = joined[-3:]
        self._to_protocol(data)

    def _frames_received(self, data: bytes) -> None:
        frames = self._frames
        assert frames is not None
        for chunk, is_message in frames.feed(data, messages=self._fragments is None):
            if not is_message:
                self._to_protocol(chunk)
            elif not self._closing:
                self._on_message(chunk)
            # else: a command after our close frame is dropped, as _on_frame drops it
        if frames.stopped or self._closing:
            self._frames = None  # from here on websockets sees the whole stream

    def _to_protocol(self, data: bytes) -> None:
        """Let websockets parse ``data``: the handshake, and frames it must judge."""
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._write_protocol_output()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._write_protocol_output()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
        if self._pending is not None:
            # The worker was cancelled before its first step and will never await it.
            self._pending.close()
        if self._open:
            self._open = False
            gateway = self.gateway
            gateway.connections.discard(self)
            gateway.metrics.connections.dec()
            _decrement(gateway.per_ip, self.ip)
            if self.user_id is not None:
                _decrement(gateway.per_user, self.user_id)
            for channel in list(self.channels):
                gateway.node.leave(self, channel)

    def pause_writing(self) -> None:
        """The transport buffer is over its high-water mark; send() measures it."""

    def resume_writing(self) -> None:
        """Nothing waits on writability: pushes are never awaited per connection."""

    # --- uvicorn shutdown hook ----------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn calls this on SIGTERM: ask the client to reconnect elsewhere."""
        if self._open:
            self.close(CloseCode.SERVICE_RESTART, "server restarting: reconnect")
        elif self.transport is not None:
            self.transport.close()

    # --- handshake ----------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        gateway = self.gateway
        settings = gateway.settings
        url = urlsplit(request.path)
        if url.path != "/ws":
            self._reject(404, "not found: the WebSocket endpoint is /ws")
            return
        if gateway.draining:
            self._reject(503, "server restarting: reconnect")
            return
        origin = request.headers.get("Origin")
        if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
            self._reject(403, "origin not allowed")
            return
        limit = settings.max_connections_per_ip
        if limit and gateway.per_ip.get(self.ip, 0) >= limit:
            self._reject(429, "too many connections from this address")
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code != 101:
            return
        self._open = True
        gateway.connections.add(self)
        gateway.per_ip[self.ip] = gateway.per_ip.get(self.ip, 0) + 1
        gateway.metrics.connections.inc()
        gateway.metrics.connections_total.inc()
        self.codec = BY_NAME.get(self.ws.subprotocol or "", JSON)
        token = parse_qs(url.query).get("token", [""])[0]
        try:
            self.identity = gateway.tokens.verify(token)
        except ProtocolError as exc:
            self._write_protocol_output()
            self.close(CloseCode.UNAUTHORIZED, f"unauthorized: {exc.message}")
            return
        self.user_id = self.identity.user_id
        if self.user_id is not None:
            count = gateway.per_user.get(self.user_id, 0) + 1
            gateway.per_user[self.user_id] = count
            if settings.max_connections_per_user and count > settings.max_connections_per_user:
                self.close(CloseCode.POLICY_VIOLATION, "too many connections for this user")

    def _reject(self, status: int, message: str) -> None:
        response = self.ws.reject(status, message)
        self.ws.send_response(response)

    # --- incoming frames ----------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if not self._open or self._closing:
            return
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if frame.opcode is not self.codec.opcode:
                kind = "text" if self.codec.opcode is Opcode.TEXT else "binary"
                self.close(CloseCode.UNSUPPORTED_DATA, f"{self.codec.name} takes {kind} frames")
            elif frame.fin:
                self._on_message(bytes(frame.data))
            else:
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._on_message(data)
        elif frame.opcode is Opcode.CLOSE:
            self._closing = True

    def _on_message(self, data: bytes) -> None:
        try:
            command = parse_command(self.codec.loads(data))
        except ProtocolError as exc:
            if self.codec.opcode is Opcode.TEXT and not _is_utf8(data):
                self.close(CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
            else:
                self._reply_error(0, exc)
            return
        except CommandError as exc:
            self._reply_error(exc.command_id, exc.error)
            return
        if not self._rate.take():
            self._reply_error(
                command.id,
                ProtocolError("rate_limited", f"slow down: retry in {self._rate.retry_after():.2f}s"),
            )
            return
        arrived = time.perf_counter()
        if self._worker is None:
            pending = self._start(command, arrived)
            if pending is not None:
                self._pending = pending
                self._worker = asyncio.get_running_loop().create_task(self._run_commands(command, arrived))
        elif len(self._inbox) >= self.gateway.settings.command_queue_limit:
            self.close(CloseCode.POLICY_VIOLATION, "flood: too many commands queued")
        else:
            self._inbox.append((command, arrived))

    def _start(self, command: Command, arrived: float) -> Coroutine[Any, Any, Reply] | None:
        """Answer ``command`` if its handler can at once; else return what to await."""
        try:
            outcome = self.gateway.node.dispatch(self, command)
        except Exception as exc:
            self._answer_failure(command, arrived, exc)
            return None
        if isinstance(outcome, Coroutine):
            return outcome
        self._answer(command, arrived, outcome)
        return None

    async def _run_commands(self, command: Command, arrived: float) -> None:
        """Finish the command in ``_pending``, then the queued ones in arrival order, then exit.

        Commands whose handlers answer at once are answered in between without an await.
        """
        try:
            while True:
                pending, self._pending = self._pending, None
                assert pending is not None
                try:
                    result = await pending
                except Exception as exc:
                    self._answer_failure(command, arrived, exc)
                else:
                    self._answer(command, arrived, result)
                while self._pending is None:
                    if not self._inbox or self._closing:
                        return
                    command, arrived = self._inbox.popleft()
                    self._pending = self._start(command, arrived)
        finally:
            self._worker = None

    def _answer(self, command: Command, arrived: float, result: Reply) -> None:
        self.send(self.codec.frame({"id": command.id, "ok": result}))
        self._observe(command, arrived)
        if self._joins:
            joins, self._joins = self._joins, []
            for channel, position in joins:
                self.gateway.node.hub.joined(self, channel, position)

    def _answer_failure(self, command: Command, arrived: float, exc: Exception) -> None:
        if not isinstance(exc, ProtocolError):
            log.exception("op %s failed", command.op, exc_info=exc)
            exc = ProtocolError("internal", "internal error")
        self._reply_error(command.id, exc)
        self._observe(command, arrived)

    def _observe(self, command: Command, arrived: float) -> None:
        """Time from the command's arrival (queueing included) to its answer."""
        op = command.op if self.gateway.node.knows(command.op) else "unknown"
        self.gateway.metrics.command_timer(op).observe(time.perf_counter() - arrived)

    def _reply_error(self, command_id: int, error: ProtocolError) -> None:
        self.gateway.metrics.error_counter(error.code).inc()
        self.send(self.codec.frame({"id": command_id, "error": error.as_dict()}))

    # --- Session / Subscriber -----------------------------------------------------

    def subscribed(self, channel: str) -> bool:
        return channel in self.channels

    def on_subscribed(self, channel: str, position: StreamPosition) -> None:
        self.channels.add(channel)
        self._joins.append((channel, position))

    def on_unsubscribed(self, channel: str) -> None:
        self.channels.discard(channel)

    def on_kicked(self, channel: str, code: str, reason: str) -> None:
        """A domain removed us from ``channel`` (kick, ban) on some process.

        Also while a subscribe is still in progress: the subscribe then fails instead of
        replying ok to a subscription that no longer exists.
        """
        was_subscribed = channel in self.channels
        self.gateway.node.leave(self, channel)
        if was_subscribed:
            push = {
                "ch": channel,
                "ev": "unsubscribe",
                "off": 0,
                "data": {"code": code, "reason": reason},
            }
            self.send(self.codec.frame(push))

    # --- the write path -----------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Write one complete frame, or cut the client if it cannot keep up."""
        transport = self.transport
        if self._closing or transport is None:
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > self.gateway.settings.write_buffer_limit_bytes:
            self.gateway.metrics.slow_disconnects.inc()
            self.close(CloseCode.SLOW, "slow: client did not read its messages in time")

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the socket is dropped after a bounded wait."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        self._inbox.clear()
        self.gateway.metrics.closes.labels(str(code)).inc()
        with contextlib.suppress(InvalidState):
            self.ws.send_close(code, reason[:120])
        self._write_protocol_output()

    def ping(self) -> None:
        """Ask the client for a pong (browsers answer by themselves)."""
        if self._open and not self._closing:
            with contextlib.suppress(InvalidState):
                self.ws.send_ping(b"")
            self._write_protocol_output()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _write_protocol_output(self) -> None:
        """Flush what the Sans-I/O protocol queued (handshake, pongs, close frames)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                # Half-close: the client still sends what it had in flight, and a socket
                # we kept open for reading answers it without a reset that would destroy
                # our close frame in the client's receive buffer.
                transport.write_eof()
            else:
                transport.close()
        if self.ws.close_expected() and self._close_timer is None:
            # The client should answer our close frame and hang up; dropping the socket
            # first could lose the close frame to a TCP reset, so wait, with a bound.
            self._closing = True
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._abort)


def _decrement(counts: dict[str, int], key: str) -> None:
    remaining = counts.get(key, 1) - 1
    if remaining > 0:
        counts[key] = remaining
    else:
        counts.pop(key, None)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _select_subprotocol(protocol: ServerProtocol, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
    """Pick the first supported subprotocol the client offers; none means JSON."""
    for name in subprotocols:
        if name in BY_NAME:
            return name
    return None
