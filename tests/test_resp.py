"""The lean Redis connection: replies in order, pub/sub pushes, and every way it can break.

Against the real Redis, except where Redis cannot be made to misbehave on purpose
(silence, a reply nobody asked for): there a small TCP server plays the part.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime import resp
from realtime.redis_batch import Batcher
from realtime.resp import Endpoint, RespClient, RespClients, RespConnection, pack
from tests.services import unique_prefix

pytestmark = pytest.mark.redis


def test_commands_are_packed_as_bulk_strings() -> None:
    assert pack(("SET", b"k\r\n", 7, 1.5)) == b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n$3\r\n1.5\r\n"
    with pytest.raises(TypeError):
        pack(("SET", "k", None))
    with pytest.raises(TypeError):
        pack(("SET", "k", True))


async def test_replies_come_back_in_order_with_errors_in_place(redis_url: str) -> None:
    key = f"{unique_prefix()}n"
    conn = await RespConnection.open(Endpoint.from_url(redis_url))
    try:
        replies = await conn.call_many(
            [
                ("INCRBY", key, 5),
                ("GET", key),
                ("GET", f"{key}:missing"),
                ("LPOP", key),  # wrong type
                ("EVALSHA", "0" * 40, 0),
                ("EVAL", "return {1, 'two', {3}}", 0),
                ("DEL", key),
            ]
        )
    finally:
        await conn.aclose()
    assert replies[:3] == [5, b"5", None]
    assert isinstance(replies[3], ResponseError) and "WRONGTYPE" in str(replies[3])
    assert isinstance(replies[4], NoScriptError)
    assert replies[5:] == [[1, b"two", [3]], 1]


async def test_a_database_index_in_the_url_is_selected(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    key = f"{unique_prefix()}db"
    conn = await RespConnection.open(Endpoint.from_url(f"{base}/9"))
    plain = aioredis.Redis.from_url(f"{base}/9")
    try:
        await conn.call("SET", key, "here", "EX", 60)
        assert await plain.get(key) == b"here"
    finally:
        await plain.delete(key)
        await plain.aclose()
        await conn.aclose()


async def test_a_subscribed_connection_hands_messages_to_its_callback(redis_url: str) -> None:
    channel = f"{unique_prefix()}ch"
    pushes: list[list[Any]] = []
    arrived = asyncio.Event()

    def on_push(reply: list[Any]) -> None:
        pushes.append(reply)
        arrived.set()

    conn = await RespConnection.open(Endpoint.from_url(redis_url), on_push=on_push)
    publisher = aioredis.Redis.from_url(redis_url)
    try:
        assert await conn.call("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
        for i in range(3):
            await publisher.publish(channel, f"m{i}")
        assert await conn.call("PING") == [b"pong", b""]  # answered in between, not pushed
        async with asyncio.timeout(5):
            while len(pushes) < 3:
                arrived.clear()
                await arrived.wait()
        assert pushes == [[b"message", channel.encode(), f"m{i}".encode()] for i in range(3)]
        assert await conn.call("UNSUBSCRIBE", channel) == [b"unsubscribe", channel.encode(), 0]
    finally:
        await publisher.aclose()
        await conn.aclose()


async def test_a_killed_connection_fails_what_waits_and_the_client_reconnects(redis_url: str) -> None:
    client = RespClient(Endpoint.from_url(redis_url))
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await client.call("PING")
        conn = client._conn
        assert conn is not None
        own_id = await client.call("CLIENT", "ID")
        waiting = asyncio.ensure_future(client.call("BLPOP", f"{unique_prefix()}never", 0))
        await asyncio.sleep(0.1)
        await admin.execute_command("CLIENT", "KILL", "ID", own_id)
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(waiting, 5)
        assert conn.closed.done()
        assert await client.call("PING") == b"PONG"  # a fresh connection
        assert client._conn is not conn
    finally:
        await admin.aclose()
        await client.aclose()


async def test_nothing_listening_is_a_connection_error_for_every_command() -> None:
    client = RespClient(Endpoint("127.0.0.1", _closed_port()))
    replies = await client.call_many([("PING",), ("PING",)])
    assert all(isinstance(reply, RedisConnectionError) for reply in replies)


async def test_the_batcher_reloads_scripts_through_the_lean_connection(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    connections = RespClients()
    try:
        batcher = Batcher(redis, connections)
        marker = uuid.uuid4().hex  # a script no server has seen: the first EVALSHA is refused
        script = batcher.script(f"return {{KEYS[1], '{marker}'}}")
        keys = [f"{unique_prefix()}{{r:{i}}}:x" for i in range(5)]
        replies = await asyncio.gather(*(batcher.call(*script.command([key])) for key in keys))
        assert replies == [[key.encode(), marker.encode()] for key in keys]
    finally:
        await connections.aclose()
        await redis.aclose()


# --- a server that misbehaves ---------------------------------------------------------


@asynccontextmanager
async def _fake_redis(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[Endpoint]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_silent_server_times_out_and_the_connection_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resp, "REPLY_TIMEOUT_S", 0.2)
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(1 << 16)

    async with _fake_redis(silent) as endpoint:
        conn = await RespConnection.open(endpoint)
        (reply,) = await conn.call_many([("PING",)])
        assert isinstance(reply, RedisTimeoutError)
        assert conn.closed.done()
        await conn.aclose()
        for writer in held:
            writer.close()


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b":1\r\n")
        await writer.drain()
        await reader.read(1 << 16)
        writer.close()

    async with _fake_redis(chatty) as endpoint:
        conn = await RespConnection.open(endpoint)
        await asyncio.wait_for(asyncio.shield(conn.closed), 5)
        with pytest.raises(RedisConnectionError):
            await conn.call("PING")
        await conn.aclose()


def _answering(reply: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server that answers the first request with ``reply``, then waits to be closed."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(reply)
        await writer.drain()
        await reader.read(1 << 16)
        writer.close()

    return answer


async def test_garbage_from_the_server_drops_the_connection() -> None:
    async with _fake_redis(_answering(b"?what\r\n")) as endpoint:
        conn = await RespConnection.open(endpoint)
        with pytest.raises(RedisConnectionError, match="protocol error"):
            await conn.call("PING")
        await conn.aclose()


async def test_cluster_error_replies_are_redis_py_exceptions_with_their_fields() -> None:
    replies = b"-MOVED 3999 10.0.0.2:6381\r\n-ASK 12 10.0.0.3:6379\r\n-CLUSTERDOWN The cluster is down\r\n"
    async with _fake_redis(_answering(replies)) as endpoint:
        conn = await RespConnection.open(endpoint)
        moved, ask, down = await conn.call_many([("GET", "a"), ("GET", "b"), ("GET", "c")])
        await conn.aclose()
    assert isinstance(moved, MovedError) and (moved.slot_id, moved.node_addr) == (3999, ("10.0.0.2", 6381))
    assert type(ask) is AskError and (ask.slot_id, ask.host, ask.port) == (12, "10.0.0.3", 6379)
    assert isinstance(down, ClusterDownError) and str(down) == "The cluster is down"
