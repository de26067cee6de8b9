"""The stock ledger on Redis: one Lua script per step (commerce/ledger.lua).

Calls made in the same event-loop turn travel together in one pipeline (one per node
on a Redis Cluster: every key of a sale shares the hash tag ``{sale:<id>}``), and the
reservation attempts of one turn for one sale go to Redis as one script call that
takes them in order, each attempt still one atomic step. A burst of reservations thus
costs one round trip and one command per turn rather than one per attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from realtime.redis_batch import Batcher
from realtime.redis_client import RedisClient
from realtime.resp import RespClients

from .ledger import (
    VERSION_STRIDE,
    Attempt,
    DueHold,
    Level,
    Outcome,
    Reserved,
    Snapshot,
    StockLedger,
    key_field,
)

log = logging.getLogger("livemart.commerce")

SCRIPT_FILE = Path(__file__).with_name("ledger.lua")
#: Attempts one reserve script call handles at most (keeps each call well under a millisecond).
MAX_ATTEMPTS = 64


def read_scripts(path: Path = SCRIPT_FILE) -> dict[str, str]:
    """The named sections of ledger.lua (``-- script: NAME`` starts one)."""
    scripts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("-- script: "):
            current = scripts[line.removeprefix("-- script: ").strip()] = []
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() + "\n" for name, lines in scripts.items()}


SCRIPTS = read_scripts()


class SaleKeys:
    """Key names of one sale, all in hash slot ``{sale:<id>}`` under the deployment prefix."""

    def __init__(self, prefix: str, sale_id: str) -> None:
        self._base = f"{prefix}{{sale:{sale_id}}}:"
        self.state = self._base + "s"
        self.users = self._base + "u"
        self.deadlines = self._base + "d"
        self.keys = self._base + "k"

    def all(self) -> list[str]:
        return [self.state, self.users, self.deadlines, self.keys]


class RedisLedger(StockLedger):
    """Stock ledger whose every step is one Lua script on the sale's slot."""

    def __init__(self, redis: RedisClient, connections: RespClients, *, prefix: str, key_ttl_ms: int) -> None:
        super().__init__(key_ttl_ms=key_ttl_ms)
        self._prefix = prefix
        self._batcher = Batcher(redis, connections, unavailable="stock ledger unavailable")
        self._scripts = {name: self._batcher.script(source) for name, source in SCRIPTS.items()}
        self._attempts: dict[str, list[tuple[Attempt, asyncio.Future[Reserved]]]] = {}
        self._attempts_scheduled = False

    def keys(self, sale_id: str) -> SaleKeys:
        return SaleKeys(self._prefix, sale_id)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._batcher.call(*self._scripts[name].command(keys, args))

    async def reserve(self, attempt: Attempt) -> Reserved:
        future: asyncio.Future[Reserved] = asyncio.get_running_loop().create_future()
        self._attempts.setdefault(attempt.sale_id, []).append((attempt, future))
        if not self._attempts_scheduled:
            self._attempts_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_attempts)
        return await future

    def _send_attempts(self) -> None:
        """One script call per sale for the attempts of this loop turn (at most MAX_ATTEMPTS)."""
        self._attempts_scheduled = False
        queued, self._attempts = self._attempts, {}
        for sale_id, items in queued.items():
            for start in range(0, len(items), MAX_ATTEMPTS):
                task = asyncio.ensure_future(
                    self._reserve_batch(sale_id, items[start : start + MAX_ATTEMPTS])
                )
                task.add_done_callback(_log_failure)

    async def _reserve_batch(
        self, sale_id: str, items: list[tuple[Attempt, asyncio.Future[Reserved]]]
    ) -> None:
        args: list[Any] = [self.key_ttl_ms]
        for a, _ in items:
            args += [a.reservation_id, a.user_id, a.quantity, a.now_ms, key_field(a.user_id, a.key)]
        try:
            flat = await self._script("reserve", self.keys(sale_id).all(), args)
        except Exception as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for i, (_, future) in enumerate(items):
            outcome, rid, remaining, generation, version, deadline = flat[6 * i : 6 * i + 6]
            if not future.done():
                future.set_result(
                    Reserved(
                        Outcome(outcome.decode()),
                        rid.decode(),
                        int(remaining),
                        int(generation),
                        int(version),
                        int(deadline),
                    )
                )

    async def give_back(
        self, sale_id: str, reservation_id: str, *, key: tuple[str, str] | None = None
    ) -> Level | None:
        args = [reservation_id] if key is None else [reservation_id, key_field(*key)]
        reply = await self._script("give_back", self.keys(sale_id).all(), args)
        if reply is None:
            return None
        remaining, generation, version, holds = reply
        return Level(int(remaining), int(version), int(generation), int(holds))

    async def settle(self, sale_id: str, reservation_id: str) -> bool:
        k = self.keys(sale_id)
        return bool(await self._script("settle", [k.state, k.deadlines], [reservation_id]))

    async def due(self, sale_ids: Iterable[str], now_ms: int, *, limit: int) -> dict[str, list[DueHold]]:
        ids = list(sale_ids)
        replies = await asyncio.gather(
            *(self._script("due", [self.keys(s).state, self.keys(s).deadlines], [now_ms, limit]) for s in ids)
        )
        out: dict[str, list[DueHold]] = {}
        for sale_id, flat in zip(ids, replies, strict=True):
            holds = []
            for rid, value in zip(flat[0::2], flat[1::2], strict=True):
                quantity, _, user = value.decode().partition(":")
                holds.append(DueHold(rid.decode(), user, int(quantity)))
            if holds:
                out[sale_id] = holds
        return out

    async def levels(self, sale_ids: Iterable[str]) -> dict[str, Level | None]:
        ids = list(sale_ids)
        batch = self._batcher
        replies = await asyncio.gather(
            *(batch.call("HMGET", self.keys(s).state, "r", "v", "g") for s in ids),
            *(batch.call("ZCARD", self.keys(s).deadlines) for s in ids),
        )
        out: dict[str, Level | None] = {}
        for i, sale_id in enumerate(ids):
            remaining, version, generation = replies[i]
            if remaining is None or generation is None:
                out[sale_id] = None
            else:
                holds = replies[len(ids) + i]
                out[sale_id] = Level(int(remaining), int(version or 0), int(generation), int(holds))
        return out

    async def held_keys(self, sale_id: str) -> frozenset[str]:
        fields = await self._batcher.call("HKEYS", self.keys(sale_id).keys)
        return frozenset(f.decode() for f in fields)

    async def load(self, snapshot: Snapshot, now_ms: int) -> bool:
        k = self.keys(snapshot.sale_id)
        terms = snapshot.terms
        args: list[Any] = [
            snapshot.generation,
            snapshot.generation * VERSION_STRIDE,
            terms.stock,
            terms.per_user_limit,
            terms.starts_ms or 0,
            terms.ends_ms or 0,
            terms.hold_ms,
            len(snapshot.holds),
        ]
        for hold in snapshot.holds:
            deadline = -1 if hold.deadline_ms is None else hold.deadline_ms
            args += [hold.reservation_id, hold.quantity, hold.user_id, deadline]
        restored = self.restorable_keys(snapshot, now_ms)
        args.append(max((left for _, left in restored), default=1))
        for record, _ in restored:
            args += [key_field(record.user_id, record.key), record.reservation_id]
        return bool(await self._script("load", k.all(), args))


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("stock ledger batch failed", exc_info=task.exception())
