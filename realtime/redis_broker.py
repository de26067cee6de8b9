"""Redis pub/sub broker: one Redis subscription per channel per process.

Publishes made in the same event-loop turn travel together in one pipeline. History
publishes run one Lua script that assigns the offset, appends to a capped stream and
broadcasts, so the offset and the broadcast can never disagree. Keys of one channel
share a hash tag and therefore one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .broker import Broker, HistoryPage, HistoryPolicy, Publication, StreamPosition
from .errors import ProtocolError

log = logging.getLogger("livemart.broker")

# KEYS: offset, stream, epoch. ARGV: pubsub channel, payload, maxlen, ttl, candidate epoch.
PUBLISH_WITH_HISTORY = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[1], KEYS[2])
end
local off = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], off .. '-0', 'p', ARGV[2])
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[3], epoch, 'EX', ttl)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[1], off .. '\\n' .. ARGV[2])
return {off, epoch}
"""

# KEYS: offset, stream, epoch. ARGV: since, limit, candidate epoch, ttl.
# Returns {offset, epoch, entries}; creating the epoch here lets a subscriber that
# joins before the first publish hold a position that stays valid.
READ_HISTORY = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], epoch, 'EX', tonumber(ARGV[4]))
end
local off = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit == 0 or since >= off then
  return {off, epoch, {}}
end
return {off, epoch, redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', limit)}
"""

CONTROL_CHANNEL = "__livemart__"


class RedisBroker(Broker):
    """Broker over one Redis server (or a Redis-compatible proxy)."""

    def __init__(self, url: str, *, prefix: str = "lm:", history_ttl_s: int = 24 * 3600) -> None:
        super().__init__()
        self._url = url
        self._prefix = prefix
        self._ttl_s = history_ttl_s
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, health_check_interval=10, decode_responses=False
        )
        #: Logical channels this process wants, whatever the connection state.
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._pending: list[tuple[Publication, HistoryPolicy | None, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._publish_script = self._redis.register_script(PUBLISH_WITH_HISTORY)
        self._history_script = self._redis.register_script(READ_HISTORY)

    # --- naming -------------------------------------------------------------------

    def _tag(self, channel: str) -> str:
        return f"{self._prefix}{{{channel}}}"

    def _keys(self, channel: str) -> list[str]:
        tag = self._tag(channel)
        return [f"{tag}:o", f"{tag}:h", f"{tag}:e"]

    def _channel_of(self, pubsub_name: bytes) -> str:
        name = pubsub_name.decode()
        return name[len(self._prefix) + 1 : -1]

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self._connect_pubsub()
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")

    async def close(self) -> None:
        self._closing = True
        if self._pending:
            await self._flush()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._drop_pubsub()
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._redis.ping()

    async def _connect_pubsub(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._tag(CONTROL_CHANNEL), *(self._tag(c) for c in self._channels))
        self._pubsub = pubsub

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _read_loop(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                if self._pubsub is None:
                    await self._connect_pubsub()
                    log.warning("redis pub/sub reconnected; resubscribed %d channels", len(self._channels))
                    self._on_resubscribed(set(self._channels))
                    backoff = 0.05
                message = await self._pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    self._deliver(message["channel"], message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self._closing:
                    return
                log.warning("redis pub/sub lost (%s); retrying in %.2fs", exc, backoff)
                await self._drop_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _deliver(self, pubsub_name: bytes, data: bytes) -> None:
        newline = data.index(b"\n")
        channel = self._channel_of(pubsub_name)
        if channel == CONTROL_CHANNEL:
            return
        try:
            pub = Publication.decode(channel, int(data[:newline]), data[newline + 1 :])
        except (ValueError, TypeError) as exc:
            log.error("dropping undecodable publication on %s: %s", channel, exc)
            return
        self._on_publication(pub)

    # --- subscriptions ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None:
            # On failure the reader reconnects and subscribes every wanted channel.
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                await self._pubsub.subscribe(self._tag(channel))

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                await self._pubsub.unsubscribe(self._tag(channel))

    # --- publishing ---------------------------------------------------------------

    async def publish(self, pub: Publication, *, history: HistoryPolicy | None = None) -> StreamPosition:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((pub, history, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)
        result = await future
        if history is None:
            return StreamPosition(pub.offset, "")
        offset, epoch = result
        pub.offset = int(offset)
        return StreamPosition(pub.offset, epoch.decode())

    def _start_flush(self) -> None:
        task = asyncio.create_task(self._flush())
        task.add_done_callback(_log_failure)

    async def _flush(self) -> None:
        """Send every publish queued this loop turn in one pipeline."""
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        pipe = self._redis.pipeline(transaction=False)
        for pub, history, _ in batch:
            payload = pub.encode()
            if history is None:
                pipe.publish(self._tag(pub.channel), b"%d\n%s" % (pub.offset, payload))
            else:
                args: list[bytes | str | int] = [
                    self._tag(pub.channel),
                    payload,
                    history.size,
                    history.ttl_s,
                    secrets.token_hex(4),
                ]
                await self._publish_script(keys=self._keys(pub.channel), args=args, client=pipe)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                log.warning("publish failed: %s", result)
                future.set_exception(ProtocolError("unavailable", "broker unavailable"))
            else:
                future.set_result(result)

    # --- history ------------------------------------------------------------------

    async def _read(self, channel: str, since: int, limit: int) -> tuple[int, str, list[Any]]:
        try:
            offset, epoch, entries = await self._history_script(
                keys=self._keys(channel),
                args=[since, limit, secrets.token_hex(4), self._ttl_s],
            )
        except (RedisError, OSError) as exc:
            raise ProtocolError("unavailable", f"broker unavailable: {exc}") from None
        return int(offset), epoch.decode(), entries

    async def history(self, channel: str, since: int, *, limit: int) -> HistoryPage:
        offset, epoch, entries = await self._read(channel, since, limit)
        position = StreamPosition(offset, epoch)
        pubs = [
            Publication.decode(channel, int(entry_id.split(b"-", 1)[0]), fields[b"p"])
            for entry_id, fields in _pairs(entries)
        ]
        missed = offset - since
        if missed <= 0:
            return HistoryPage([], position, complete=missed == 0)
        complete = len(pubs) == missed and pubs[0].offset == since + 1
        return HistoryPage(pubs, position, complete=complete)

    async def position(self, channel: str) -> StreamPosition:
        offset, epoch, _ = await self._read(channel, 0, 0)
        return StreamPosition(offset, epoch)


def _pairs(entries: list[Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XRANGE entries as returned through EVAL: [id, [field, value, ...]]."""
    out = []
    for entry_id, flat in entries:
        out.append((entry_id, dict(zip(flat[0::2], flat[1::2], strict=True))))
    return out


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("publish flush failed", exc_info=task.exception())
