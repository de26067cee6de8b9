"""A lean Redis connection for the hot paths: pipelined commands and pub/sub pushes.

redis-py costs tens of microseconds of Python per command and per pub/sub message
(its pipeline objects, response callbacks, retries, health checks and dicts): at 5,000
group messages/s a quarter of the server's CPU went there. This module speaks RESP2
over one asyncio connection and parses with hiredis, in C, and nothing else: commands
are written as they come, replies are matched to their callers in order, and on a
subscribed connection a published message goes straight to a callback. Everything
else (history reads, cluster slot maps, following redirections, admin commands) stays
with redis-py.

Errors keep redis-py's classes, so callers catch one family: an error reply is a
``ResponseError`` (``NoScriptError`` for NOSCRIPT, ``MovedError`` for MOVED, and so on),
and a connection that is lost, refused or silent past ``REPLY_TIMEOUT_S`` fails every
command waiting on it with a ``ConnectionError`` or ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_S = 2.0
#: A Redis that answers nothing for this long is taken for gone: its connection is dropped.
REPLY_TIMEOUT_S = 5.0

#: Replies that a subscribed connection gets without asking: published messages.
MESSAGES = frozenset({b"message", b"smessage", b"pmessage"})
#: What a subscribed connection answers to each command it may send.
_SUBSCRIBED_REPLIES = {
    "SUBSCRIBE": b"subscribe",
    "SSUBSCRIBE": b"ssubscribe",
    "UNSUBSCRIBE": b"unsubscribe",
    "SUNSUBSCRIBE": b"sunsubscribe",
    "PING": b"pong",
}
#: Error replies that redis-py gives a class of their own, by their first word.
_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,
    "READONLY": ReadOnlyError,
    "MOVED": MovedError,
    "ASK": AskError,
    "TRYAGAIN": TryAgainError,
    "CLUSTERDOWN": ClusterDownError,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one Redis server is and how to log in."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        return cls.from_options(parse_url(url))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Endpoint:
        """From redis-py connection options (a pool's ``connection_kwargs``)."""
        tls = None
        if options.get("ssl") or options.get("connection_class") is SSLConnection:
            tls = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=options.get("host") or "localhost",
            port=int(options.get("port") or 6379),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
        )


def pack(command: Sequence[Any]) -> bytes:
    """``command`` as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _error(reply: hiredis.ReplyError) -> RedisError:
    """The exception redis-py would raise: a known first word picks the class and is
    cut off (``MOVED 3999 10.0.0.2:6379`` is ``MovedError("3999 10.0.0.2:6379")``)."""
    message = str(reply)
    code, _, rest = message.partition(" ")
    error = _ERRORS.get(code)
    return ResponseError(message) if error is None else error(rest)


class RespConnection(asyncio.Protocol):
    """One connection to one Redis server.

    With ``on_push`` it is a subscribed connection: published messages (and anything
    else that answers no command, such as a ``sunsubscribe`` the server sends by itself
    when a slot moves) go to ``on_push`` as they arrive, as hiredis lists.
    """

    def __init__(self, on_push: Callable[[list[Any]], None] | None = None) -> None:
        self._on_push = on_push
        self._reader = hiredis.Reader(notEnoughData=False)
        self._transport: asyncio.Transport | None = None
        #: Commands sent and not yet answered: the reply each expects, and its caller.
        self._waiting: deque[tuple[bytes | None, asyncio.Future[Any]]] = deque()
        #: Done once the connection is unusable (lost, or closed by us).
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Done once the socket itself is closed.
        self._released: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        *,
        on_push: Callable[[list[Any]], None] | None = None,
        timeout: float = CONNECT_TIMEOUT_S,
    ) -> RespConnection:
        """Connect and log in (AUTH, and SELECT on a plain connection)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: cls(on_push),
                    endpoint.host,
                    endpoint.port,
                    ssl=endpoint.tls,
                    server_hostname=endpoint.host if endpoint.tls else None,
                )
                hello: list[tuple[Any, ...]] = []
                if endpoint.password is not None:
                    user = (endpoint.username,) if endpoint.username else ()
                    hello.append(("AUTH", *user, endpoint.password))
                if endpoint.db and on_push is None:
                    hello.append(("SELECT", endpoint.db))
                for reply in await conn.call_many(hello):
                    if isinstance(reply, Exception):
                        conn.close()
                        raise reply
        except TimeoutError:
            raise RedisTimeoutError(f"connecting to redis {endpoint.host}:{endpoint.port}") from None
        except OSError as exc:
            raise RedisConnectionError(f"connecting to redis {endpoint.host}:{endpoint.port}: {exc}") from exc
        return conn

    # --- commands -----------------------------------------------------------------

    def submit(self, commands: Sequence[Sequence[Any]]) -> list[asyncio.Future[Any]]:
        """Send ``commands`` in one write; one future per reply (an error reply is raised)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        if self._transport is None or self.closed.done():
            for future in futures:
                future.set_exception(RedisConnectionError("redis connection closed"))
            return futures
        subscribed = self._on_push is not None
        for command, future in zip(commands, futures, strict=True):
            expect = _SUBSCRIBED_REPLIES.get(str(command[0]).upper()) if subscribed else None
            self._waiting.append((expect, future))
        self._transport.write(b"".join(pack(command) for command in commands))
        return futures

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Each command's reply, or the exception it met; the connection is dropped if
        Redis stays silent past ``REPLY_TIMEOUT_S``."""
        if not commands:
            return []
        futures = self.submit(commands)
        done, _ = await asyncio.wait(futures, timeout=REPLY_TIMEOUT_S)
        if len(done) < len(futures):
            self.close(RedisTimeoutError(f"no reply from redis in {REPLY_TIMEOUT_S} s"))
        return [f.exception() or f.result() for f in futures]

    async def call(self, *command: Any) -> Any:
        (reply,) = await self.call_many([command])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self, reason: Exception | None = None) -> None:
        """Drop the connection now; whatever waits on it fails with ``reason``."""
        if self._transport is not None:
            self._transport.abort()
        self._lost(reason or RedisConnectionError("redis connection closed"))

    async def aclose(self) -> None:
        """Close, and wait until the socket is closed too."""
        self.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._released), CONNECT_TIMEOUT_S)

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(RedisConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            self._answer(reply)

    def _answer(self, reply: Any) -> None:
        if self._on_push is not None and self._is_push(reply):
            self._on_push(reply)
            return
        if not self._waiting:
            self.close(RedisConnectionError(f"redis sent a reply nobody asked for: {reply!r:.100}"))
            return
        _, future = self._waiting.popleft()
        if future.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(_error(reply))
        else:
            future.set_result(reply)

    def _is_push(self, reply: Any) -> bool:
        """On a subscribed connection: a reply that answers no waiting command."""
        if not isinstance(reply, list) or not reply:
            return False
        if reply[0] in MESSAGES:
            return True
        return not self._waiting or self._waiting[0][0] != reply[0]

    def connection_lost(self, exc: Exception | None) -> None:
        reason = RedisConnectionError(f"redis connection lost: {exc}" if exc else "redis connection closed")
        self._lost(reason)
        if not self._released.done():
            self._released.set_result(None)

    def _lost(self, reason: Exception) -> None:
        self._transport = None
        waiting, self._waiting = self._waiting, deque()
        for _, future in waiting:
            if not future.done():
                future.set_exception(reason)
        if not self.closed.done():
            self.closed.set_result(None)


class RespClient:
    """Commands to one server over one :class:`RespConnection`, opened on first use and
    again after it is lost. Each batch is one write; Redis answers in order."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._conn: RespConnection | None = None
        self._opening = asyncio.Lock()

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Each command's reply, or the exception it met (a failed connect fails them all)."""
        try:
            conn = await self._connection()
        except RedisError as exc:
            return [exc] * len(commands)
        return await conn.call_many(commands)

    async def call(self, *command: Any) -> Any:
        (reply,) = await self.call_many([command])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _connection(self) -> RespConnection:
        conn = self._conn
        if conn is not None and not conn.closed.done():
            return conn
        async with self._opening:
            if self._conn is None or self._conn.closed.done():
                self._conn = await RespConnection.open(self.endpoint)
            return self._conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()


class RespClients:
    """One :class:`RespClient` per Redis server, opened on first use; their owner closes
    them together. Whoever shares one of these shares one connection per server."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int, int], RespClient] = {}

    def get(self, endpoint: Endpoint) -> RespClient:
        key = (endpoint.host, endpoint.port, endpoint.db)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = RespClient(endpoint)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients))
