"""The write path's SQL, one implementation per dialect behind one small interface.

Each sequencer worker owns one :class:`Writer` (one connection) and runs a batch as:
``transaction`` { ``claim`` → (``targets``, ``members``: recalls only) → ``store`` };
once the batch is published its locks are let go by the next ``claim`` (or ``unlock``).
The batch logic in the sequencer is the same for every dialect; only these statements
differ.

* :class:`PostgresWriter` talks to asyncpg directly with fixed statements that take
  a batch as one JSON parameter (``json_to_recordset``), so a batch of any size is a
  handful of prepared statements and almost no per-row work in Python. The SQLAlchemy path cost
  about 0.4 ms of CPU per message here, which capped a process near 1,000 sends/s.
  It also owns the cross-process publish order: a session advisory lock per group,
  counted, so a group in two batches in a row stays locked until the later one is
  published. That lock also orders sends against kicks, mutes and joins
  (:func:`lock_for_change`), so the reads taken once it is held stay true until the
  store, and a batch needs no transaction: each statement commits on its own, and
  the store, one statement, is atomic. Each statement is a round trip that also waits
  its turn in a busy event loop, and a send waits for the batch in progress and then
  its own, so a batch is two of them: the claim (locks taken and let go, then the
  reads, in the server-side function ``livemart_group_claim`` of migration
  ``groups_0002``) and the store. It was eight.
* :class:`SqlWriter` uses SQLAlchemy Core on the shared engine (SQLite): one
  process writes, so there is nothing to lock across processes, and its steps stay
  separate statements (each an aiosqlite call, not a network round trip).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection

from realtime.storage import Database

from . import rules
from .tables import groups, members, messages

log = logging.getLogger("livemart.groups")

#: First key of every advisory lock taken here ("lmgr"), so other users of
#: pg_advisory_lock in the same database pick other classes.
LOCK_CLASS = 0x6C6D6772
#: Advisory keys are 32-bit; group ids wrap into them (a collision only serializes two groups).
KEY_MOD = 2**31 - 1
#: Bound on connecting and on each statement, so an unreachable database fails sends quickly.
PG_TIMEOUT_S = 5.0
#: Bound on waiting for another process's publish lock on a group.
LOCK_WAIT_S = 15.0

GroupState = dict[int, tuple[int, bool]]
"""group id -> (last seq, muted_all), for the groups locked by this batch."""


@dataclass(slots=True)
class Lookup:
    """The reads a batch's decisions need, taken once its groups are locked."""

    #: The locked groups' rows; a group that does not exist is not in it.
    state: GroupState
    #: (group id, user id) -> their membership, for the senders (and recalled authors).
    roster: dict[tuple[int, str], rules.Member]
    #: (group id, sender, client_msg_id) -> seq of the messages already stored.
    known: dict[tuple[int, str, str], int]


@dataclass(slots=True)
class Claim:
    """What :meth:`Writer.claim` got."""

    #: Groups whose publish lock another process (or a kick) holds: neither locked nor read.
    busy: set[int]
    found: Lookup


@dataclass(slots=True)
class Changes:
    """Everything one batch writes, in one transaction."""

    #: New messages, as rows of the messages table.
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: (group id, recalled seq, seq of the tombstone).
    recalls: list[tuple[int, int, int]] = field(default_factory=list)
    #: group id -> its new last seq.
    last_seq: dict[int, int] = field(default_factory=dict)
    #: (group id, user id) -> the seq of their last message here: posting reads up to it.
    read_upto: dict[tuple[int, str], int] = field(default_factory=dict)


class Writer(Protocol):
    def transaction(self) -> Any:
        """An async context manager: commit on success, roll back on error.

        On PostgreSQL it does nothing: each statement commits on its own.
        """

    async def wait_lock(self, group_id: int) -> None:
        """Wait for one group's publish lock (call while holding no lock)."""

    async def claim(
        self,
        ids: list[int],
        pairs: set[tuple[int, str]],
        keys: set[tuple[int, str, str]],
        release: list[int] | None = None,
    ) -> Claim:
        """Lock the groups ``ids`` that are free, then read them.

        The reads, taken once the locks are held: the groups' rows, the memberships
        of ``pairs`` and the stored seqs of ``keys`` (client_msg_ids). A group whose
        publish lock is busy elsewhere is neither waited for nor read. ``release``
        names publish locks to let go of in the same round trip (see :meth:`unlock`).
        """

    async def members(self, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], rules.Member]:
        """The memberships of ``pairs`` (groups this writer holds)."""

    async def targets(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], rules.Sent]:
        """The stored messages that recalls in this batch point at."""

    async def store(self, changes: Changes) -> None: ...

    async def unlock(self, ids: list[int]) -> None:
        """Let go of publish locks taken by earlier claims, once per entry of ``ids``.

        A lock is counted: a group claimed by two batches in a row is held until both
        have let go.
        """

    async def close(self) -> None: ...

    def alive(self) -> bool:
        """False once the connection is known to be gone (the server ended the session)."""

    def is_outage(self, exc: BaseException) -> bool:
        """True when ``exc`` means the database is unreachable (tell clients ``unavailable``)."""


async def lock_for_change(conn: AsyncConnection, group_id: int) -> None:
    """Wait for the group's publish lock until ``conn``'s transaction ends (PostgreSQL).

    Taken by every change to a group's members or settings: the write path reads
    them once it holds the lock and stores its batch before letting go, so no
    change can fall between a send's checks and its commit. Elsewhere the row lock
    that follows is enough: one process writes a SQLite file.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_CLASS, group_id % KEY_MOD)))


async def open_writer(db: Database) -> Writer:
    if db.dialect == "postgresql":
        return await PostgresWriter.connect(db.url)
    return await SqlWriter.connect(db)


# --- PostgreSQL -------------------------------------------------------------------------

_WAIT_LOCK = "SELECT pg_advisory_lock($1, ($2::bigint % $3)::int)"
_UNLOCK = "SELECT g FROM unnest($1::bigint[]) AS t(g) WHERE NOT pg_advisory_unlock($2, (g % $3)::int)"
# Batches travel as one JSON parameter each (json_to_recordset): asyncpg encodes
# arrays element by element in Python, a JSON string is built in C by orjson.
# The claim's rows: 'b' a busy group, 'x' a released lock that was not held, 'g' a
# group's row, 'm' a membership, 'c' a stored client_msg_id.
_CLAIM = "SELECT * FROM livemart_group_claim($1::bigint[], $2, $3, $4::bigint[], $5::json, $6::json)"
_MEMBERS = """
SELECT m.group_id, m.user_id, m.role, m.muted_until
FROM group_members m JOIN json_to_recordset($1::json) AS p(g bigint, u text)
  ON m.group_id = p.g AND m.user_id = p.u
"""
_TARGETS = """
SELECT m.group_id, m.seq, m.sender_id, m.kind, m.created_at, m.recalled_seq
FROM group_messages m JOIN json_to_recordset($1::json) AS t(g bigint, s bigint)
  ON m.group_id = t.g AND m.seq = t.s
"""
# One round trip stores the whole batch: messages, recalls, last seqs, read cursors.
_STORE = """
WITH recalled AS (
  UPDATE group_messages m SET recalled_seq = r.b, text = '', ref = NULL
  FROM json_to_recordset($2::json) AS r(g bigint, s bigint, b bigint)
  WHERE m.group_id = r.g AND m.seq = r.s
  RETURNING 1
), heads AS (
  UPDATE chat_groups c SET last_seq = h.s
  FROM json_to_recordset($3::json) AS h(g bigint, s bigint)
  WHERE c.id = h.g
  RETURNING 1
), cursors AS (
  UPDATE group_members m SET read_seq = x.s
  FROM json_to_recordset($4::json) AS x(g bigint, u text, s bigint)
  WHERE m.group_id = x.g AND m.user_id = x.u AND m.read_seq < x.s
  RETURNING 1
)
INSERT INTO group_messages
  (group_id, seq, sender_id, sender_name, kind, text, ref, client_msg_id, created_at)
SELECT g, s, u, n, k, t, r, c, ts
FROM json_to_recordset($1::json)
  AS x(g bigint, s bigint, u text, n text, k text, t text, r json, c text, ts float8)
"""

# Every statement above (and in livemart_group_claim) is a batch of key probes.
# json_to_recordset is estimated at 100 rows whatever it holds, so the planner would
# hash-join it against any table it takes for small (a fresh one, or below some 10^5
# rows) and read that table whole on every batch: 13 M rows of group_messages in one
# 10 s benchmark run. Nested loops over the primary and unique indexes cost the same at
# any table size. (livemart_group_claim also plans its reads afresh each call: see
# migration groups_0002.)
_PLANNER = {"enable_hashjoin": "off", "enable_mergejoin": "off"}

_PG_OUTAGE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
)


class PostgresWriter:
    """A writer on its own asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, url: str) -> PostgresWriter:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(
            dsn, timeout=PG_TIMEOUT_S, command_timeout=PG_TIMEOUT_S, server_settings=_PLANNER
        )
        return cls(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield  # each statement commits on its own (the module's docstring says why)

    async def wait_lock(self, group_id: int) -> None:
        # The holder keeps the lock through a transaction and a bounded publish.
        await self._conn.execute(_WAIT_LOCK, LOCK_CLASS, group_id, KEY_MOD, timeout=LOCK_WAIT_S)

    async def claim(
        self,
        ids: list[int],
        pairs: set[tuple[int, str]],
        keys: set[tuple[int, str, str]],
        release: list[int] | None = None,
    ) -> Claim:
        rows = await self._conn.fetch(
            _CLAIM,
            ids,
            LOCK_CLASS,
            KEY_MOD,
            release or [],
            _json([{"g": g, "u": u} for g, u in pairs]),
            _json([{"g": g, "u": u, "c": c} for g, u, c in keys]),
        )
        claim = Claim(set(), Lookup({}, {}, {}))
        found = claim.found
        for r in rows:
            kind, group_id, user = r["k"], int(r["group_id"]), r["user_id"]
            if kind == "m":
                found.roster[(group_id, user)] = rules.Member(user, r["role"], r["muted_until"])
            elif kind == "c":
                found.known[(group_id, user, r["client_msg_id"])] = int(r["seq"])
            elif kind == "g":
                found.state[group_id] = (int(r["seq"]), bool(r["muted_all"]))
            elif kind == "b":
                claim.busy.add(group_id)
            else:
                _not_held(group_id)
        return claim

    async def members(self, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], rules.Member]:
        rows = await self._conn.fetch(_MEMBERS, _json([{"g": g, "u": u} for g, u in pairs]))
        return {
            (int(r["group_id"]), r["user_id"]): rules.Member(r["user_id"], r["role"], r["muted_until"])
            for r in rows
        }

    async def targets(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], rules.Sent]:
        if not keys:
            return {}
        rows = await self._conn.fetch(_TARGETS, _json([{"g": g, "s": s} for g, s in keys]))
        return {
            (int(r["group_id"]), int(r["seq"])): rules.Sent(
                int(r["seq"]), r["sender_id"], r["kind"], float(r["created_at"]), r["recalled_seq"]
            )
            for r in rows
        }

    async def store(self, changes: Changes) -> None:
        rows = [
            {
                "g": row["group_id"],
                "s": row["seq"],
                "u": row["sender_id"],
                "n": row["sender_name"],
                "k": row["kind"],
                "t": row["text"],
                "r": row["ref"],
                "c": row["client_msg_id"],
                "ts": row["created_at"],
            }
            for row in changes.rows
        ]
        await self._conn.execute(
            _STORE,
            _json(rows),
            _json([{"g": g, "s": s, "b": b} for g, s, b in changes.recalls]),
            _json([{"g": g, "s": s} for g, s in changes.last_seq.items()]),
            _json([{"g": g, "u": u, "s": s} for (g, u), s in changes.read_upto.items()]),
        )

    async def unlock(self, ids: list[int]) -> None:
        if ids:
            for r in await self._conn.fetch(_UNLOCK, ids, LOCK_CLASS, KEY_MOD):
                _not_held(int(r["g"]))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._conn.close(), PG_TIMEOUT_S)
        except Exception:
            self._conn.terminate()

    def alive(self) -> bool:
        return not self._conn.is_closed()

    def is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, _PG_OUTAGE) or self._conn.is_closed()


def _not_held(group_id: int) -> None:
    log.error("released the publish lock of group %d, which this writer did not hold", group_id)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- SQLite (and any other SQLAlchemy dialect) ------------------------------------------


class SqlWriter:
    """A writer on a connection of the shared engine, with SQLAlchemy Core statements."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, db: Database) -> SqlWriter:
        return cls(await db.engine.connect())

    def transaction(self) -> Any:
        return self._conn.begin()

    async def wait_lock(self, group_id: int) -> None:
        return None

    async def claim(
        self,
        ids: list[int],
        pairs: set[tuple[int, str]],
        keys: set[tuple[int, str, str]],
        release: list[int] | None = None,
    ) -> Claim:
        # A no-op update: on SQLite the first write takes the database's write lock,
        # so every read after it in this transaction is current.
        await self._conn.execute(
            sa.update(groups).where(groups.c.id.in_(ids)).values(last_seq=groups.c.last_seq)
        )
        result = await self._conn.execute(
            sa.select(groups.c.id, groups.c.last_seq, groups.c.muted_all).where(groups.c.id.in_(ids))
        )
        state = {int(r.id): (int(r.last_seq), bool(r.muted_all)) for r in result}
        return Claim(set(), Lookup(state, await self.members(pairs), await self._client_ids(keys)))

    async def members(self, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], rules.Member]:
        result = await self._conn.execute(
            sa.select(members.c.group_id, members.c.user_id, members.c.role, members.c.muted_until).where(
                sa.tuple_(members.c.group_id, members.c.user_id).in_(list(pairs))
            )
        )
        return {(int(r.group_id), r.user_id): rules.Member(r.user_id, r.role, r.muted_until) for r in result}

    async def _client_ids(self, keys: set[tuple[int, str, str]]) -> dict[tuple[int, str, str], int]:
        if not keys:
            return {}
        result = await self._conn.execute(
            sa.select(
                messages.c.group_id, messages.c.sender_id, messages.c.client_msg_id, messages.c.seq
            ).where(
                sa.tuple_(messages.c.group_id, messages.c.sender_id, messages.c.client_msg_id).in_(list(keys))
            )
        )
        return {(int(r.group_id), r.sender_id, r.client_msg_id): int(r.seq) for r in result}

    async def targets(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], rules.Sent]:
        if not keys:
            return {}
        result = await self._conn.execute(
            sa.select(
                messages.c.group_id,
                messages.c.seq,
                messages.c.sender_id,
                messages.c.kind,
                messages.c.created_at,
                messages.c.recalled_seq,
            ).where(sa.tuple_(messages.c.group_id, messages.c.seq).in_(list(keys)))
        )
        return {
            (int(r.group_id), int(r.seq)): rules.Sent(
                int(r.seq), r.sender_id, r.kind, float(r.created_at), r.recalled_seq
            )
            for r in result
        }

    async def store(self, changes: Changes) -> None:
        conn = self._conn
        await conn.execute(sa.insert(messages), changes.rows)
        if changes.recalls:
            await conn.execute(
                sa.update(messages)
                .where(messages.c.group_id == sa.bindparam("g"), messages.c.seq == sa.bindparam("s"))
                .values(recalled_seq=sa.bindparam("b"), text="", ref=None),
                [{"g": g, "s": s, "b": b} for g, s, b in changes.recalls],
            )
        await conn.execute(
            sa.update(groups).where(groups.c.id == sa.bindparam("g")).values(last_seq=sa.bindparam("s")),
            [{"g": g, "s": s} for g, s in changes.last_seq.items()],
        )
        await conn.execute(
            sa.update(members)
            .where(
                members.c.group_id == sa.bindparam("g"),
                members.c.user_id == sa.bindparam("u"),
                members.c.read_seq < sa.bindparam("s"),
            )
            .values(read_seq=sa.bindparam("s")),
            [{"g": g, "u": u, "s": s} for (g, u), s in changes.read_upto.items()],
        )

    async def unlock(self, ids: list[int]) -> None:
        return None

    async def close(self) -> None:
        await self._conn.close()

    def alive(self) -> bool:
        return not (self._conn.closed or self._conn.invalidated)

    def is_outage(self, exc: BaseException) -> bool:
        return sql_outage(exc)


def sql_outage(exc: BaseException) -> bool:
    """True when an SQLAlchemy error means the database is unreachable or saturated."""
    if isinstance(exc, (OperationalError, OSError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or "connection" in str(exc.orig).lower()
    )
