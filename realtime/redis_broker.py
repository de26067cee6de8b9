"""Redis pub/sub broker: one Redis subscription per channel per process.

Publishes made in the same event-loop turn travel together in one pipeline (on a
cluster, one per shard: ``realtime.redis_batch``). Pub/sub links, and on one server
the publishes too, use the lean connections of ``realtime.resp``: at thousands of
publications a second redis-py's per-command and per-message Python was a quarter of
the server's CPU.
History publishes run one Lua script that assigns the offset, appends to a capped
stream and broadcasts, so the offset and the broadcast can never disagree. Keys of one
channel share a hash tag and therefore one Redis Cluster slot; on a cluster the broadcast is
SPUBLISH and subscriptions are SSUBSCRIBE on the shard that owns the slot, so a
publication travels to one shard instead of every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .broker import Broker, HistoryPage, HistoryPolicy, Publication, StreamPosition
from .errors import ProtocolError
from .redis_batch import Batcher, Command
from .redis_client import RedisClient, connect
from .resp import Endpoint, RespClients, RespConnection

log = logging.getLogger("livemart.broker")

# KEYS: offset, stream, epoch.
# ARGV: pubsub channel, payload, maxlen, ttl, candidate epoch, PUBLISH or SPUBLISH.
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
redis.call(ARGV[6], ARGV[1], off .. '\\n' .. ARGV[2])
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


#: A pub/sub connection quiet this long is asked for a PING, so a dead peer is noticed.
HEALTH_CHECK_S = 10.0


@dataclass(eq=False)
class _Link:
    """One pub/sub connection: to the Redis server, or to one Redis Cluster shard.

    It never reconnects by itself: a Redis that restarted empty would go unnoticed,
    with nobody recovering the gap. A lost connection reaches ``_read_loop``, which
    subscribes again on a fresh one and tells the hub.
    """

    name: str
    endpoint: Endpoint
    #: Cluster shards use SSUBSCRIBE so a publication reaches only the shard that owns it.
    sharded: bool
    #: Logical channels this link should carry.
    channels: set[str] = field(default_factory=set)
    #: Channels subscribed on the current pub/sub connection.
    joined: set[str] = field(default_factory=set)
    #: Serializes (un)subscribe commands so none is lost between a reader and a caller.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: RespConnection | None = None
    reader: asyncio.Task[None] | None = None
    #: Set when the link gains a channel, to wake an idle reader.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class RedisBroker(Broker):
    """Broker over one Redis server or a Redis Cluster (sharded pub/sub, Redis >= 7)."""

    def __init__(self, url: str, *, prefix: str = "lm:", history_ttl_s: int = 24 * 3600) -> None:
        super().__init__()
        self._prefix = prefix
        self._ttl_s = history_ttl_s
        self._url = url
        self._redis: RedisClient = connect(url, health_check_interval=10)
        self._cluster = isinstance(self._redis, RedisCluster)
        self._publish_command = "SPUBLISH" if self._cluster else "PUBLISH"
        #: Logical channels this process wants, whatever the connection state.
        self._channels: set[str] = set()
        self._links: dict[str, _Link] = {}
        self._closing = False
        self._history_script = self._redis.register_script(READ_HISTORY)
        #: Publishes go out once per loop turn, one write per server, on connections of
        #: their own. Not through the cluster client's own calls: those retry a script
        #: whose reply was lost (publishing it twice), and a shard that answers
        #: CLUSTERDOWN makes that client drop every shard's connections.
        self._connections = RespClients()
        self._batch = Batcher(self._redis, self._connections, unavailable="broker unavailable")
        self._publish_script = self._batch.script(PUBLISH_WITH_HISTORY)

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
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()

    async def close(self) -> None:
        self._closing = True
        for link in list(self._links.values()):
            if link.reader is not None:
                link.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link.reader
            if link.conn is not None:
                await link.conn.aclose()
            self._drop_pubsub(link)
        await self._connections.aclose()
        await self._redis.aclose()

    async def ping(self) -> None:
        if isinstance(self._redis, RedisCluster):
            await self._redis.ping(target_nodes=RedisCluster.ALL_NODES)
        else:
            await self._redis.ping()

    # --- links --------------------------------------------------------------------

    def _route(self, channel: str) -> _Link:
        """The link that carries ``channel``: the shard owning its slot, or the server."""
        if isinstance(self._redis, aioredis.Redis):
            link = self._links.get("server")
            if link is None:
                link = self._add_link("server", Endpoint.from_url(self._url))
            return link
        node = self._redis.get_node_from_key(self._tag(channel))
        if node is None:
            raise ProtocolError("unavailable", "no Redis Cluster node serves this channel")
        link = self._links.get(node.name)
        if link is None:
            options = {**self._redis.get_connection_kwargs(), "host": node.host, "port": node.port, "db": 0}
            link = self._add_link(node.name, Endpoint.from_options(options))
        return link

    def _add_link(self, name: str, endpoint: Endpoint) -> _Link:
        link = self._links[name] = _Link(name, endpoint, sharded=self._cluster)
        link.reader = asyncio.create_task(self._read_loop(link), name=f"redis-broker-{name}")
        return link

    async def _sync(self, link: _Link) -> None:
        """Subscribe the link's connection to every channel it should carry and lacks."""
        async with link.lock:
            if link.conn is None or link.conn.closed.done():
                link.joined.clear()
                link.conn = await RespConnection.open(
                    link.endpoint, on_push=functools.partial(self._on_push, link)
                )
            missing = sorted(link.channels - link.joined)
            # One SSUBSCRIBE may only name channels of one slot: one per command, all in one write.
            verb = "SSUBSCRIBE" if link.sharded else "SUBSCRIBE"
            replies = await link.conn.call_many([(verb, self._tag(channel)) for channel in missing])
            for channel, reply in zip(missing, replies, strict=True):
                if isinstance(reply, Exception):
                    raise reply
                link.joined.add(channel)

    def _drop_pubsub(self, link: _Link) -> None:
        conn, link.conn = link.conn, None
        link.joined.clear()
        if conn is not None:
            conn.close()

    def _on_push(self, link: _Link, reply: list[Any]) -> None:
        if reply[0] in (b"message", b"smessage") and len(reply) == 3:
            self._deliver(reply[1], reply[2])
        elif link.conn is not None:
            # The server unsubscribed us by itself (a slot moved away from this shard):
            # start the link over, which routes its channels again and recovers the gap.
            link.conn.close(RedisConnectionError(f"redis sent {reply[0]!r} unasked"))

    async def _watch(self, conn: RespConnection) -> None:
        """Raise once ``conn`` is lost or stops answering PINGs."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), HEALTH_CHECK_S)
            except TimeoutError:
                await conn.call("PING")  # no answer within REPLY_TIMEOUT_S drops it
                continue
            raise RedisConnectionError("redis pub/sub connection lost")

    async def _read_loop(self, link: _Link) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                if not link.joined:
                    if not link.channels:
                        link.wakeup.clear()
                        await link.wakeup.wait()
                        continue
                    await self._sync(link)
                backoff = 0.05
                assert link.conn is not None
                await self._watch(link.conn)
            except (RedisError, OSError) as exc:
                # Any failure (a dropped socket, or redis-py's own resubscribe refused by a
                # cluster) means: start this link over from a fresh connection.
                if self._closing:
                    return
                log.warning("redis pub/sub %s lost (%r); retrying in %.2fs", link.name, exc, backoff)
                self._drop_pubsub(link)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if await self._reroute(link):
                    return

    async def _reroute(self, link: _Link) -> bool:
        """Re-subscribe a lost link's channels where they live now; True if it moved away.

        After a failover a channel's slot may belong to another shard: every channel is
        routed again and joined on its current link, and the hub is told so it can
        recover what was published while nobody listened.
        """
        channels = set(link.channels)
        try:
            if isinstance(self._redis, RedisCluster):
                await self._redis.nodes_manager.initialize()
            moved: dict[str, list[str]] = {}
            for channel in channels:
                target = self._route(channel)
                if target is not link:
                    moved.setdefault(target.name, []).append(channel)
            for name, names in moved.items():
                target = self._links[name]
                link.channels.difference_update(names)
                target.channels.update(names)
                if target.joined:
                    await self._sync(target)
                target.wakeup.set()
            if link.channels:
                await self._sync(link)
        except (RedisError, OSError) as exc:
            link.channels |= channels - set().union(*(lk.channels for lk in self._links.values()))
            log.warning("redis re-subscribe of %s failed (%s); will retry", link.name, exc)
            return False
        log.warning("redis pub/sub %s back; resubscribed %d channels", link.name, len(channels))
        self._on_resubscribed(channels)
        if not link.channels and link.name != "server":
            del self._links[link.name]
            self._drop_pubsub(link)
            return True
        return False

    def _deliver(self, pubsub_name: bytes, data: bytes) -> None:
        channel = self._channel_of(pubsub_name)
        try:
            newline = data.index(b"\n")
            pub = Publication.decode(channel, int(data[:newline]), data[newline + 1 :])
        except (ValueError, TypeError) as exc:
            log.error("dropping undecodable publication on %s: %s", channel, exc)
            return
        self._on_publication(pub)

    # --- subscriptions ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        link = self._route(channel)
        link.channels.add(channel)
        # On failure the link's reader reconnects and joins every wanted channel.
        with contextlib.suppress(RedisError, OSError):
            await self._sync(link)
        link.wakeup.set()

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        for link in self._links.values():
            if channel in link.channels:
                link.channels.discard(channel)
                async with link.lock:
                    if channel in link.joined and link.conn is not None:
                        link.joined.discard(channel)
                        verb = "SUNSUBSCRIBE" if link.sharded else "UNSUBSCRIBE"
                        with contextlib.suppress(RedisError, OSError):
                            await link.conn.call(verb, self._tag(channel))

    # --- publishing ---------------------------------------------------------------

    async def publish(self, pub: Publication, *, history: HistoryPolicy | None = None) -> StreamPosition:
        result = await self._submit(pub, history)
        if history is None:
            return StreamPosition(pub.offset, "")
        offset, epoch = result
        pub.offset = int(offset)
        return StreamPosition(pub.offset, epoch.decode())

    async def publish_all(self, pubs: Sequence[Publication]) -> None:
        results = await asyncio.gather(*(self._submit(pub, None) for pub in pubs), return_exceptions=True)
        failed = sum(isinstance(result, BaseException) for result in results)
        if failed:
            raise ProtocolError("unavailable", f"broker unavailable: {failed} of {len(pubs)} not published")

    def _submit(self, pub: Publication, history: HistoryPolicy | None) -> asyncio.Future[Any]:
        """Queue ``pub`` for this loop turn's pipeline; the future gets the reply."""
        return self._batch.submit(*self._command(pub, history))

    def _command(self, pub: Publication, history: HistoryPolicy | None) -> Command:
        """The publish as one command (on a cluster, for the shard that owns the channel)."""
        payload = pub.encode()
        if history is None:
            return (self._publish_command, self._tag(pub.channel), b"%d\n%s" % (pub.offset, payload))
        args = [
            self._tag(pub.channel),
            payload,
            history.size,
            history.ttl_s,
            secrets.token_hex(4),
            self._publish_command,
        ]
        return self._publish_script.command(self._keys(pub.channel), args)

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
