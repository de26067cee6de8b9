"""Coalescing Redis calls: everything queued in one event-loop turn, one round trip.

A round trip through redis-py costs a few hundred microseconds of CPU, far more
than the command itself. Under load many comments are in flight at once, so the
admission checks and snapshot writes they make in the same loop turn share one
pipeline (the broker batches publishes the same way). Each call still gets its own
result or error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from realtime.errors import ProtocolError

log = logging.getLogger("livemart.rooms")

#: Queues one call on the pipeline (e.g. ``lambda pipe: pipe.get(key)``).
Queue = Callable[[Pipeline], Any]


class Batcher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[Queue, asyncio.Future[Any]]] = []
        self._scheduled = False

    async def call(self, queue: Queue) -> Any:
        """Run the command ``queue`` adds to the pipeline; its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((queue, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        asyncio.ensure_future(self._flush()).add_done_callback(_log_failure)

    async def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        pipe = self._redis.pipeline(transaction=False)
        for queue, _ in batch:
            result = queue(pipe)
            if asyncio.iscoroutine(result):  # script calls queue through a coroutine
                await result
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                log.warning("room state call failed: %s", result)
                future.set_exception(ProtocolError("unavailable", "room state unavailable"))
            else:
                future.set_result(result)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("room state batch failed", exc_info=task.exception())
