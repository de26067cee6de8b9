"""Group commit of granted holds: one SQL transaction for every hold queued meanwhile.

A burst of reservations would otherwise open one transaction (and one commit flush) per
hold and exhaust the connection pool. Each caller still waits for its own row to be
committed before it replies, so "durable before the reply" holds for every hold.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import TimeoutError as PoolTimeout

from realtime.errors import ProtocolError

from .entities import Reservation
from .reservations import Recorded, ReservationStore

log = logging.getLogger("livemart.commerce")

#: Holds written by one transaction at most.
MAX_BATCH = 500
#: Transactions in flight at once (the rest of the pool stays free for other work).
MAX_PARALLEL = 4

_Item = tuple[Reservation, int, "asyncio.Future[Recorded]"]


class HoldRecorder:
    def __init__(self, store: ReservationStore) -> None:
        self._store = store
        self._queue: list[_Item] = []
        self._scheduled = False
        self._writers: set[asyncio.Task[None]] = set()

    async def record(self, res: Reservation, generation: int) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.append((res, generation, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return await future

    def _start(self) -> None:
        """Start writers for what is queued, up to MAX_PARALLEL at once."""
        self._scheduled = False
        while self._queue and len(self._writers) < MAX_PARALLEL:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.ensure_future(self._write(batch))
            self._writers.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._writers.discard(task)
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def _write(self, batch: list[_Item]) -> None:
        try:
            results = await self._store.record_many([(res, gen) for res, gen, _ in batch])
        except PoolTimeout:
            _fail(batch, ProtocolError("unavailable", "database busy; retry with the same key"))
        except ProtocolError as exc:
            _fail(batch, exc)
        except Exception as exc:
            log.exception("recording %d holds failed", len(batch))
            _fail(batch, exc)
        else:
            for (_, _, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self, timeout_s: float) -> None:
        """Let the transactions in flight finish (bounded); their callers are waiting."""
        if self._writers:
            await asyncio.wait(set(self._writers), timeout=timeout_s)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
