"""The stock ledger: where units of a flash sale are taken and given back.

Two implementations keep the same guarantees (tests/test_commerce_ledger.py runs one
suite against both): :class:`MemoryLedger` for the embedded single process and
``commerce.redis_ledger.RedisLedger`` (one Lua script per step) for a cluster.

* ``reserve`` is one atomic step: sale window, per-user limit and stock are checked,
  then units, the user's count, the hold and its deadline, the idempotency key and the
  stock version are all written with nothing interleaved. No lock, no TTL guard.
* A key the same user already used on the same sale replays the first reservation,
  for at least ``key_ttl_ms`` (then SQL's unique (user, key) still catches it).
* Giving back or settling a hold changes something only if the hold is still there, so
  both are safe to repeat and to race (sweeper against release, two sweepers).
* ``load`` replaces a sale's state only with a newer generation; a sale without state
  answers ``MISSING`` and must be rebuilt from SQL (commerce.reconcile).

The ledger holds no durable truth: SQL does. The ledger is the fast, atomic gate in
front of it, and can always be rebuilt from SQL.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Versions of one generation live in [generation * STRIDE, (generation + 1) * STRIDE),
#: so every version after a rebuild is larger than every version before it.
VERSION_STRIDE = 1_000_000_000


class Outcome(enum.StrEnum):
    HELD = "held"
    REPLAY = "replay"
    SOLD_OUT = "sold_out"
    LIMIT_EXCEEDED = "limit_exceeded"
    NOT_STARTED = "not_started"
    ENDED = "ended"
    #: The ledger has no state for the sale: rebuild it from SQL, then retry.
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Terms:
    """What the ledger enforces for one sale."""

    stock: int
    per_user_limit: int
    hold_ms: int
    starts_ms: int | None = None
    ends_ms: int | None = None


def key_field(user_id: str, key: str) -> str:
    """One string per (user, Idempotency-Key); the length prefix keeps pairs apart."""
    return f"{len(user_id)}:{user_id}:{key}"


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation that keeps units out of stock, as SQL records it."""

    reservation_id: str
    user_id: str
    quantity: int
    #: When an unconfirmed hold expires; None once confirmed (the units are sold).
    deadline_ms: int | None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An Idempotency-Key and the reservation it made, as SQL records it."""

    user_id: str
    key: str
    reservation_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything needed to rebuild one sale's ledger state."""

    sale_id: str
    generation: int
    terms: Terms
    holds: Sequence[Hold] = ()
    #: Keys of every reservation of the sale, held or not (a replay returns it either way).
    keys: Sequence[KeyRecord] = ()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One reservation request as the ledger sees it."""

    sale_id: str
    reservation_id: str
    user_id: str
    quantity: int
    key: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Reserved:
    """The ledger's answer to an attempt.

    For ``HELD`` the hold is new; for ``REPLAY`` ``reservation_id`` is the earlier one.
    ``generation`` is the state the answer came from (the SQL fence checks it).
    """

    outcome: Outcome
    reservation_id: str = ""
    remaining: int = 0
    generation: int = 0
    version: int = 0
    deadline_ms: int = 0


@dataclass(frozen=True, slots=True)
class Level:
    """A sale's stock as the ledger sees it now."""

    remaining: int
    version: int
    generation: int
    #: Unconfirmed holds outstanding.
    holds: int


@dataclass(frozen=True, slots=True)
class DueHold:
    """An unconfirmed hold whose deadline has passed."""

    reservation_id: str
    user_id: str
    quantity: int


class StockLedger(abc.ABC):
    """Atomic stock accounting per sale (guarantees in the module docstring)."""

    def __init__(self, *, key_ttl_ms: int) -> None:
        #: How long an idempotency key is remembered after the reservation was made.
        self.key_ttl_ms = key_ttl_ms

    @abc.abstractmethod
    async def reserve(self, attempt: Attempt) -> Reserved:
        """Take ``attempt.quantity`` units for the user, or say why not."""

    @abc.abstractmethod
    async def give_back(
        self, sale_id: str, reservation_id: str, *, key: tuple[str, str] | None = None
    ) -> Level | None:
        """Return a hold's units to stock; None if the hold was not there.

        With ``key`` (user id, idempotency key) the key is forgotten too if it still
        names this reservation: used to undo a hold that SQL refused to record.
        """

    @abc.abstractmethod
    async def settle(self, sale_id: str, reservation_id: str) -> bool:
        """The hold was confirmed: its units stay sold and it no longer expires."""

    @abc.abstractmethod
    async def due(self, sale_ids: Iterable[str], now_ms: int, *, limit: int) -> dict[str, list[DueHold]]:
        """Unconfirmed holds past their deadline, at most ``limit`` per sale."""

    @abc.abstractmethod
    async def levels(self, sale_ids: Iterable[str]) -> dict[str, Level | None]:
        """Current stock of each sale; None for a sale without state."""

    @abc.abstractmethod
    async def held_keys(self, sale_id: str) -> frozenset[str]:
        """``key_field`` of every key the ledger would replay: all other attempts are new."""

    @abc.abstractmethod
    async def load(self, snapshot: Snapshot, now_ms: int) -> bool:
        """Replace the sale's state from SQL unless a newer generation is already loaded."""

    def restorable_keys(self, snapshot: Snapshot, now_ms: int) -> list[tuple[KeyRecord, int]]:
        """Keys still within their TTL, with the TTL left (ms)."""
        out = []
        for record in snapshot.keys:
            left = record.created_ms + self.key_ttl_ms - now_ms
            if left > 0:
                out.append((record, left))
        return out


@dataclass(slots=True)
class _SaleState:
    terms: Terms
    generation: int
    remaining: int
    version: int
    #: Units held or bought per user.
    users: dict[str, int] = field(default_factory=dict)
    #: Unconfirmed holds: reservation id -> (user id, quantity, deadline ms).
    holds: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    #: (user id, key) -> (reservation id, key expiry ms).
    keys: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    def level(self) -> Level:
        return Level(self.remaining, self.version, self.generation, len(self.holds))


class MemoryLedger(StockLedger):
    """In-process ledger for the embedded server: plain dicts, no await inside a step.

    Each method body runs without yielding to the event loop, which makes it as atomic
    for this process as a Lua script is for Redis.
    """

    def __init__(self, *, key_ttl_ms: int) -> None:
        super().__init__(key_ttl_ms=key_ttl_ms)
        self._sales: dict[str, _SaleState] = {}

    async def reserve(self, attempt: Attempt) -> Reserved:
        state = self._sales.get(attempt.sale_id)
        if state is None:
            return Reserved(Outcome.MISSING)
        gen, ver = state.generation, state.version

        def refuse(outcome: Outcome) -> Reserved:
            return Reserved(outcome, remaining=state.remaining, generation=gen, version=ver)

        prior = state.keys.get((attempt.user_id, attempt.key))
        if prior is not None and prior[1] > attempt.now_ms:
            return Reserved(Outcome.REPLAY, prior[0], state.remaining, gen, ver)
        terms = state.terms
        if terms.starts_ms is not None and attempt.now_ms < terms.starts_ms:
            return refuse(Outcome.NOT_STARTED)
        if terms.ends_ms is not None and attempt.now_ms >= terms.ends_ms:
            return refuse(Outcome.ENDED)
        if state.remaining <= 0:
            return refuse(Outcome.SOLD_OUT)
        used = state.users.get(attempt.user_id, 0)
        if used + attempt.quantity > terms.per_user_limit:
            return refuse(Outcome.LIMIT_EXCEEDED)
        if attempt.quantity > state.remaining:
            return refuse(Outcome.SOLD_OUT)
        state.remaining -= attempt.quantity
        state.version += 1
        state.users[attempt.user_id] = used + attempt.quantity
        deadline = attempt.now_ms + terms.hold_ms
        state.holds[attempt.reservation_id] = (attempt.user_id, attempt.quantity, deadline)
        state.keys[(attempt.user_id, attempt.key)] = (
            attempt.reservation_id,
            attempt.now_ms + self.key_ttl_ms,
        )
        return Reserved(Outcome.HELD, attempt.reservation_id, state.remaining, gen, state.version, deadline)

    async def give_back(
        self, sale_id: str, reservation_id: str, *, key: tuple[str, str] | None = None
    ) -> Level | None:
        state = self._sales.get(sale_id)
        if state is None:
            return None
        if key is not None and state.keys.get(key, ("", 0))[0] == reservation_id:
            del state.keys[key]
        hold = state.holds.pop(reservation_id, None)
        if hold is None:
            return None
        user_id, quantity, _ = hold
        left = state.users.get(user_id, 0) - quantity
        if left > 0:
            state.users[user_id] = left
        else:
            state.users.pop(user_id, None)
        state.remaining += quantity
        state.version += 1
        return state.level()

    async def settle(self, sale_id: str, reservation_id: str) -> bool:
        state = self._sales.get(sale_id)
        return state is not None and state.holds.pop(reservation_id, None) is not None

    async def due(self, sale_ids: Iterable[str], now_ms: int, *, limit: int) -> dict[str, list[DueHold]]:
        out: dict[str, list[DueHold]] = {}
        for sale_id in sale_ids:
            state = self._sales.get(sale_id)
            if state is None:
                continue
            expired = [
                DueHold(rid, user, qty)
                for rid, (user, qty, deadline) in state.holds.items()
                if deadline <= now_ms
            ]
            if expired:
                out[sale_id] = expired[:limit]
            stale = [k for k, (_, expires) in state.keys.items() if expires <= now_ms]
            for k in stale:
                del state.keys[k]
        return out

    async def levels(self, sale_ids: Iterable[str]) -> dict[str, Level | None]:
        out: dict[str, Level | None] = {}
        for sale_id in sale_ids:
            state = self._sales.get(sale_id)
            out[sale_id] = None if state is None else state.level()
        return out

    async def held_keys(self, sale_id: str) -> frozenset[str]:
        state = self._sales.get(sale_id)
        return frozenset() if state is None else frozenset(key_field(u, k) for u, k in state.keys)

    async def load(self, snapshot: Snapshot, now_ms: int) -> bool:
        current = self._sales.get(snapshot.sale_id)
        if current is not None and current.generation >= snapshot.generation:
            return False
        sold = sum(h.quantity for h in snapshot.holds)
        state = _SaleState(
            terms=snapshot.terms,
            generation=snapshot.generation,
            remaining=max(0, snapshot.terms.stock - sold),
            version=snapshot.generation * VERSION_STRIDE,
        )
        for hold in snapshot.holds:
            state.users[hold.user_id] = state.users.get(hold.user_id, 0) + hold.quantity
            if hold.deadline_ms is not None:
                state.holds[hold.reservation_id] = (hold.user_id, hold.quantity, hold.deadline_ms)
        for record, left in self.restorable_keys(snapshot, now_ms):
            state.keys[(record.user_id, record.key)] = (record.reservation_id, now_ms + left)
        self._sales[snapshot.sale_id] = state
        return True
