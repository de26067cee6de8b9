"""A small HTTP/1.1 JSON client with a keep-alive pool, enough for setup calls and publishing.

The generator needs only JSON requests to one origin, many at a time. Keeping this on
asyncio streams spares the package a client library dependency; parsing is limited to
what a server may legitimately answer: Content-Length, chunked, or read-to-close bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

_NO_BODY = {204, 304}


class HttpError(Exception):
    """The exchange failed at the transport level (refused, reset, timed out, garbled)."""


class HttpTimeout(HttpError):
    """No complete response within the client's timeout."""


class _Stale(Exception):
    """A pooled connection was closed by the server before answering: safe to retry."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def error_code(self) -> str:
        """The contract's `error.code` if the body carries one, else `http_<status>`."""
        try:
            code = self.json()["error"]["code"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"http_{self.status}"
        return str(code)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers from a response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Requests to one origin over at most `max_connections` keep-alive connections."""

    def __init__(self, base_url: str, *, max_connections: int = 32, timeout: float = 10.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self.opened = 0
        """Connections opened so far (lets tests and operators see reuse)."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request; raise HttpError on transport failure or timeout."""
        message = self._message(method, path, json, token, headers or {})
        async with self._slots:
            conn, reused = await self._take()
            try:
                return await self._exchange(conn, message, method)
            except _Stale:
                if not reused:
                    raise HttpError("server closed the connection without answering") from None
                conn, _ = await self._take(fresh=True)
                try:
                    return await self._exchange(conn, message, method)
                except _Stale:
                    raise HttpError("server closed the connection without answering") from None

    async def close(self) -> None:
        for conn in [*self._idle, *self._busy]:
            conn.close()
            await _closed(conn)
        self._idle.clear()
        self._busy.clear()

    def _message(self, method: str, path: str, json: Any, token: str | None, extra: dict[str, str]) -> bytes:
        body = b"" if json is None else orjson.dumps(json)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}", "Accept: */*"]
        if json is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        if json is not None:
            lines.append("Content-Type: application/json")
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines.extend(f"{name}: {value}" for name, value in extra.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _take(self, *, fresh: bool = False) -> tuple[_Conn, bool]:
        if self._idle and not fresh:
            conn = self._idle.pop()
            self._busy.add(conn)
            return conn, True
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=self._ssl), self._timeout
            )
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"connect to {self._host}:{self._port} failed: {exc!r}") from exc
        self.opened += 1
        conn = _Conn(reader, writer)
        self._busy.add(conn)
        return conn, False

    async def _exchange(self, conn: _Conn, message: bytes, method: str) -> Response:
        keep = False
        try:
            response, keep = await asyncio.wait_for(self._round_trip(conn, message, method), self._timeout)
            return response
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                raise _Stale from exc
            raise HttpError(f"{method} failed: {exc!r}") from exc
        except TimeoutError:
            raise HttpTimeout(f"{method} got no response in {self._timeout:g} s") from None
        except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
            raise HttpError(f"{method} failed: {exc!r}") from exc
        finally:
            self._busy.discard(conn)
            if keep:
                self._idle.append(conn)
            else:
                conn.close()

    async def _round_trip(self, conn: _Conn, message: bytes, method: str) -> tuple[Response, bool]:
        conn.writer.write(message)
        await conn.writer.drain()
        reader = conn.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = parse_head(head[:-4])
        keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body, keep = await reader.read(), False
        return Response(status, headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields carry nothing the generator uses
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError("chunk not followed by CRLF")


async def _closed(conn: _Conn) -> None:
    with contextlib.suppress(OSError):  # already reset by the peer: closed either way
        await conn.writer.wait_closed()
