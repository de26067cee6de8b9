"""Redis commands of one event-loop turn, sent together: one round trip per Redis server.

A round trip through redis-py costs far more CPU than a small command, so callers queue
what they send in one loop turn and it goes as one write on a lean connection
(:mod:`realtime.resp`) to each server concerned. On a Redis Cluster the commands are
grouped by the node that owns their first key (the slot map is redis-py's) and each
group goes to its node, all side by side: a node that is down or restarting fails its
own commands and no others. A command whose slot moved is sent again through redis-py's
cluster pipeline, which follows the redirection.

The connections are this module's, not redis-py's: redis-py's cluster client drops every
node's connections when one node answers CLUSTERDOWN or a slot map cannot be read (both
happen while a master restarts), and commands in flight on the healthy nodes would fail
with them. It refuses ``Script`` objects in pipelines, too.

Scripts travel as ``EVALSHA``. A node that does not know one (it restarted empty, or
``SCRIPT FLUSH``) answers NOSCRIPT; the script is then loaded on that node and the
commands it refused are sent again, so NOSCRIPT never reaches a caller. Every key a
script names must share one hash tag, so the script runs on one node, atomically.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, NoScriptError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ProtocolError
from .redis_client import ERRORS, RedisClient
from .resp import Endpoint, RespClient, RespClients

log = logging.getLogger("livemart.redis")

#: One Redis command as its words: ``("INCRBY", key, 3)``.
Command = tuple[Any, ...]

#: A queued command and the future its caller awaits.
Call = tuple[Command, asyncio.Future[Any]]

#: Least time between two reads of the cluster's slot map after connection failures.
MAP_REFRESH_S = 1.0


class Script:
    """A Lua script, sent by its SHA1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[Any] = ()) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class Batcher:
    """Sends every command queued in one event-loop turn together (see the module doc).

    Each caller gets its own result; a command that met a Redis failure raises
    ``ProtocolError("unavailable")`` with ``unavailable`` as its message.
    """

    def __init__(
        self, redis: RedisClient, connections: RespClients, *, unavailable: str = "redis unavailable"
    ) -> None:
        self._redis = redis
        #: Where the connection to each server comes from (shared with other batchers).
        self._connections = connections
        #: The connection each node's commands go on, by node name ("" on one server).
        self._clients: dict[str, RespClient] = {}
        self._unavailable = unavailable
        self._queue: list[Call] = []
        self._scheduled = False
        #: Script sources by SHA1, to load one that a node forgot.
        self.sources: dict[str, str] = {}
        #: When the cluster's slot map was last re-read after a failure (monotonic s).
        self._map_read_at = 0.0

    def script(self, source: str) -> Script:
        """A script this batcher can run (and reload where it is missing)."""
        script = Script(source)
        self.sources[script.sha] = source
        return script

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue ``command`` for this loop turn's batch; the future gets its reply.

        A future, not a coroutine: many calls can be awaited together without a task each.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return future

    async def call(self, *command: Any) -> Any:
        return await self.submit(*command)

    async def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in the same batch; raises if any one failed."""
        return list(await asyncio.gather(*(self.submit(*command) for command in commands)))

    async def call_each(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in the same batch: each one's result, or the error it met.

        On a cluster some may fail while others went through (one master is away):
        the caller learns which, and must not send the ones that went through again.
        """
        return list(
            await asyncio.gather(*(self.submit(*command) for command in commands), return_exceptions=True)
        )

    def _start(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        asyncio.ensure_future(self._send(batch)).add_done_callback(_log_failure)

    async def _send(self, batch: list[Call]) -> None:
        redis = self._redis
        if not isinstance(redis, RedisCluster):
            server = self._server(redis)
            await self._answer(batch, server.call_many, functools.partial(server.call, "SCRIPT", "LOAD"))
            return
        if not redis.nodes_manager.slots_cache:
            # Only the first time: redis-py asks for a new map whenever a node fails,
            # and if that read fails it drops every node's connections; the map is
            # re-read here after failures instead (_refresh_map).
            try:
                await redis.initialize()
            except ERRORS as exc:
                self._settle(batch, [exc] * len(batch))
                return
        groups: dict[str, tuple[ClusterNode | None, list[Call]]] = {}
        for call in batch:
            node = _node_of(redis, call[0])
            groups.setdefault("" if node is None else node.name, (node, []))[1].append(call)
        # Each node's callers are answered as soon as that node is done: a slow or
        # failing node holds up no other node's callers.
        await asyncio.gather(*(self._send_to(redis, node, calls) for node, calls in groups.values()))

    async def _send_to(self, redis: RedisCluster, node: ClusterNode | None, calls: list[Call]) -> None:
        if node is None:  # not routable from the map: redis-py's pipeline finds the way
            await self._answer(calls, lambda part: _pipeline(redis, part), redis.script_load)
        else:
            client = self._node(redis, node)
            await self._answer(
                calls,
                lambda part: self._on_node(redis, client, part),
                functools.partial(client.call, "SCRIPT", "LOAD"),
            )

    async def _answer(
        self,
        calls: list[Call],
        send: Callable[[Sequence[Command]], Awaitable[list[Any]]],
        load: Callable[[str], Awaitable[Any]],
    ) -> None:
        try:
            results = await self._reloading([command for command, _ in calls], send, load)
        except Exception as exc:  # whatever broke, no caller may wait forever
            results = [exc] * len(calls)
        self._settle(calls, results)

    def _settle(self, calls: list[Call], results: list[Any]) -> None:
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            log.warning(
                "%s: %d of %d commands failed (%r)", self._unavailable, len(failed), len(calls), failed[0]
            )
        for (_, future), result in zip(calls, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(ProtocolError("unavailable", self._unavailable))
            else:
                future.set_result(result)

    async def _reloading(
        self,
        commands: Sequence[Command],
        send: Callable[[Sequence[Command]], Awaitable[list[Any]]],
        load: Callable[[str], Awaitable[Any]],
    ) -> list[Any]:
        """``send`` the commands; load the scripts a node lacked and send those commands again."""
        results = await send(commands)
        missing = [
            i
            for i, r in enumerate(results)
            if isinstance(r, NoScriptError) and commands[i][1] in self.sources
        ]
        if not missing:
            return results
        try:
            for sha in {commands[i][1] for i in missing}:
                await load(self.sources[sha])
        except ERRORS as exc:
            for i in missing:
                results[i] = exc
            return results
        again = await send([commands[i] for i in missing])
        for i, result in zip(missing, again, strict=True):
            results[i] = result
        return results

    # --- Redis Cluster ------------------------------------------------------------

    async def _on_node(
        self, redis: RedisCluster, client: RespClient, commands: Sequence[Command]
    ) -> list[Any]:
        """The commands on the connection to the node that owns their slots."""
        results = await client.call_many(commands)
        if any(_broken(r) for r in results):
            await self._refresh_map(redis)
        moved = [i for i, r in enumerate(results) if isinstance(r, (AskError, TryAgainError))]
        if moved:  # the slot moved (resharding, failover): follow it, and learn the new map
            again = await self._reloading(
                [commands[i] for i in moved], lambda some: _pipeline(redis, some), redis.script_load
            )
            for i, result in zip(moved, again, strict=True):
                results[i] = result
        return results

    async def _refresh_map(self, redis: RedisCluster) -> None:
        """A node broke a connection: it may have restarted, and its slots may have moved
        to a replica. Re-read the map, at most once a second."""
        now = time.monotonic()
        if now - self._map_read_at < MAP_REFRESH_S:
            return
        self._map_read_at = now
        try:
            await redis.nodes_manager.initialize()
        except ERRORS as exc:
            log.warning("redis cluster slot map not refreshed: %r", exc)

    # --- connections --------------------------------------------------------------

    def _server(self, redis: Redis) -> RespClient:
        client = self._clients.get("")
        if client is None:
            pool = redis.connection_pool
            options = {**pool.connection_kwargs, "connection_class": pool.connection_class}
            client = self._clients[""] = self._connections.get(Endpoint.from_options(options))
        return client

    def _node(self, redis: RedisCluster, node: ClusterNode) -> RespClient:
        client = self._clients.get(node.name)
        if client is None:
            options = {**redis.get_connection_kwargs(), "host": node.host, "port": node.port, "db": 0}
            client = self._clients[node.name] = self._connections.get(Endpoint.from_options(options))
        return client


async def _pipeline(redis: RedisClient, commands: Sequence[Command]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    try:
        return list(await pipe.execute(raise_on_error=False))
    except ERRORS as exc:
        return [exc] * len(commands)


def _node_of(redis: RedisCluster, command: Command) -> ClusterNode | None:
    """The node owning the command's first key; None if the slot map does not say."""
    if command[0] in ("EVALSHA", "EVAL"):
        if int(command[2]) == 0:
            return None
        key = command[3]
    else:
        key = command[1]
    try:
        return redis.get_node_from_key(key)
    except SlotNotCoveredError:
        return None


def _broken(result: Any) -> bool:
    """Whether ``result`` says the connection to the node failed."""
    return isinstance(result, (RedisConnectionError, RedisTimeoutError, OSError))


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("redis batch failed", exc_info=task.exception())
