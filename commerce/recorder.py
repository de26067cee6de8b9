"""Group commit of granted holds: one SQL transaction for every hold queued meanwhile.

A burst of reservations would otherwise open one transaction (and one commit flush) per
hold and exhaust the connection pool. Each caller still waits for its own row to be
committed before it replies, so "durable before the reply" holds for every hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from realtime.errors import ProtocolError

from .entities import Reservation
from .reservations import Recorded, ReservationStore

log = logging.getLogger("livemart.commerce")

#: Holds written by one transaction at most.
MAX_BATCH = 500
#: Transactions in flight at once, over all sales (the rest of the pool stays free).
MAX_PARALLEL = 4

_Item = tuple[Reservation, int, "asyncio.Future[Recorded]"]


class HoldRecorder:
    """Queues granted holds per sale; one writer per sale drains its queue in batches."""

    def __init__(self, store: ReservationStore) -> None:
        self._store = store
        self._queues: dict[str, list[_Item]] = {}
        self._scheduled = False
        #: Sales with a transaction in flight (one at a time: they would queue on its row).
        self._writing: dict[str, asyncio.Task[None]] = {}

    async def record(self, res: Reservation, generation: int) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(res.sale_id, []).append((res, generation, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        """Start a writer for each sale with queued holds and none in flight."""
        self._scheduled = False
        for sale_id in list(self._queues):
            if sale_id in self._writing or len(self._writing) >= MAX_PARALLEL:
                continue
            queue = self._queues.pop(sale_id)
            batch, rest = queue[:MAX_BATCH], queue[MAX_BATCH:]
            if rest:
                self._queues[sale_id] = rest
            task = asyncio.ensure_future(self._write(sale_id, batch))
            self._writing[sale_id] = task
            task.add_done_callback(functools.partial(self._done, sale_id))

    def _done(self, sale_id: str, task: asyncio.Task[None]) -> None:
        self._writing.pop(sale_id, None)
        if self._queues:
            self._schedule()

    async def _write(self, sale_id: str, batch: list[_Item]) -> None:
        try:
            results = await self._store.record_many(sale_id, [(res, gen) for res, gen, _ in batch])
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
        if self._writing:
            await asyncio.wait(set(self._writing.values()), timeout=timeout_s)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
