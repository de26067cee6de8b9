"""A small livemart WebSocket client for tests: numbered calls, a push queue, bounded waits.

It follows the contract rather than the server's code, so a test that passes with it says
something about what real clients see. Waits take a `timeout` argument on purpose (ruff's
ASYNC109 is silenced for them): a test reads better with the bound next to the wait.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

JSON = "livemart.json"
MSGPACK = "livemart.msgpack"
DEFAULT_TIMEOUT_S = 5.0

Push = dict[str, Any]


class WsError(Exception):
    """An error reply: `{"id": n, "error": {"code", "message"}}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class WsClosed(ConnectionError):
    """The connection ended while a call or a push wait was outstanding."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed (code {code}, reason {reason!r})")
        self.code = code
        self.reason = reason


def _with_token(url: str, token: str | None) -> str:
    if token is None:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit(parts._replace(query=query))


class WsClient:
    """One connection. Replies resolve `call()`; every other server object is a push."""

    def __init__(self, ws: ClientConnection, protocol: str, timeout: float) -> None:
        self.ws = ws
        self.protocol = protocol
        self.timeout = timeout
        """Bound for each call and the default bound for push waits, in seconds."""
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        """Server objects that answer no pending call: pushes, and replies with no id."""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ended = asyncio.Event()
        self._failure: BaseException | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        ws_url: str,
        token: str | None = None,
        protocol: str = JSON,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> WsClient:
        """Open `ws_url` (`?token=` added when given) asking for `protocol`.

        The server must select that subprotocol: encoding frames one way and decoding the
        other would make every later assertion meaningless.
        """
        if protocol not in (JSON, MSGPACK):
            raise ValueError(f"unknown protocol {protocol!r}")
        ws = await connect(
            _with_token(ws_url, token),
            subprotocols=[Subprotocol(protocol)],
            open_timeout=timeout,
            close_timeout=timeout,
        )
        if ws.subprotocol != protocol:
            await ws.close()
            raise WsError("bad_subprotocol", f"asked for {protocol}, got {ws.subprotocol!r}")
        return cls(ws, protocol, timeout)

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed_code(self) -> int | None:
        """The close code once the connection has ended, else None."""
        return self.ws.close_code

    @property
    def closed_reason(self) -> str | None:
        return self.ws.close_reason

    def encode(self, obj: Any) -> str | bytes:
        if self.protocol == MSGPACK:
            packed: bytes = msgpack.packb(obj)
            return packed
        return json.dumps(obj)

    def decode(self, frame: str | bytes) -> Any:
        if self.protocol == MSGPACK:
            if isinstance(frame, str):
                raise ValueError("text frame on the msgpack subprotocol")
            return msgpack.unpackb(frame)
        if isinstance(frame, bytes):
            raise ValueError("binary frame on the json subprotocol")
        return json.loads(frame)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send `{"id", "op", **args}` and return the reply's `ok` body.

        Raises WsError for an error reply, WsClosed if the connection ends first and
        TimeoutError after `self.timeout` seconds.
        """
        self._raise_if_ended()
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            await self.ws.send(self.encode({"id": request_id, "op": op, **args}))
            async with asyncio.timeout(self.timeout):
                message = await reply
        except ConnectionClosed:
            raise self._closed_error() from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in message:
            error = message["error"] or {}
            raise WsError(str(error.get("code")), str(error.get("message")))
        ok: dict[str, Any] = message["ok"]
        return ok

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as is, for tests of malformed input."""
        await self.ws.send(frame)

    async def next_push(self, timeout: float | None = None) -> Push:
        """The next push, waiting at most `timeout` (default `self.timeout`) seconds."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                if not self.pushes.empty():
                    return self.pushes.get_nowait()
                self._raise_if_ended()
                getter = asyncio.ensure_future(self.pushes.get())
                ended = asyncio.ensure_future(self._ended.wait())
                try:
                    await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
                    if not getter.done():
                        getter.cancel()
                if getter.done() and not getter.cancelled():
                    return getter.result()

    async def pushes_until(
        self,
        until: int | Callable[[Push], bool],
        timeout: float | None = None,
    ) -> list[Push]:
        """Collect pushes until `until` of them arrived, or one satisfies the predicate.

        The matching push is the last element. On timeout, the TimeoutError lists what did
        arrive, which is usually the interesting part of a failure.
        """
        got: list[Push] = []
        budget = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(budget):
                while True:
                    if isinstance(until, int) and len(got) >= until:
                        return got
                    push = await self.next_push(timeout=budget)
                    got.append(push)
                    if not isinstance(until, int) and until(push):
                        return got
        except TimeoutError:
            raise TimeoutError(f"after {budget}s, got {len(got)} pushes: {got!r}") from None

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                decoded = self.decode(frame)
                for obj in decoded if isinstance(decoded, list) else [decoded]:
                    self._route(obj)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a frame we cannot read: fail every waiter loudly
            self._failure = exc
            await self.ws.close(1007, "test client could not decode a frame")
        finally:
            self._ended.set()
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(self._closed_error())

    def _route(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise ValueError(f"server sent a non-object: {obj!r}")
        reply = self._pending.get(obj["id"]) if isinstance(obj.get("id"), int) else None
        if reply is not None and not reply.done() and ("ok" in obj or "error" in obj):
            reply.set_result(obj)
        else:
            self.pushes.put_nowait(obj)

    def _closed_error(self) -> Exception:
        if self._failure is not None:
            return RuntimeError(f"test client stopped reading: {self._failure!r}")
        return WsClosed(self.ws.close_code, self.ws.close_reason or "")

    def _raise_if_ended(self) -> None:
        if self._ended.is_set():
            raise self._closed_error()
