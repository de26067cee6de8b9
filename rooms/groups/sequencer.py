"""The write path: every group message gets its seq here, durably and in order.

Sends are queued per process and committed in batches: one transaction takes every
send waiting at that moment, for any number of groups. Inside it each group's row is
locked first (``UPDATE … SET last_seq = last_seq``), then membership, mutes and
duplicate ``client_msg_id``\\s are checked, seqs are handed out after the group's
``last_seq``, the messages are inserted and ``last_seq`` is moved, all in one commit.
So seqs have no gaps or duplicates whichever process sends, and a group's lock is
held for one short transaction, never across groups or processes for long.

Replies go out after the commit; the messages are published after that, in seq
order. Publication order must match seq order across processes too, or a client
that saw seq 7 before seq 6 would resume after 7 and lose 6. On PostgreSQL a
session advisory lock per group is therefore held from before the transaction
until the publish is done; a group whose lock another process holds is left for the
next batch rather than waited for. Within a process each group belongs to one
worker, which keeps its batches in order. (SQLite needs no advisory lock in the
usual single process; several processes sharing one SQLite file get gap-free seqs
but may publish out of order: see docs/groups.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import Histogram
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection

from realtime.errors import ProtocolError
from realtime.metrics import LATENCY_BUCKETS, Metrics
from realtime.node import Node
from realtime.storage import Database

from . import rules
from .events import RoomLookup, channel, event_name, message_data, with_room_status
from .settings import GroupSettings
from .tables import groups, members, messages

log = logging.getLogger("livemart.groups")

#: First key of every advisory lock taken here ("lmgr"), so other users of
#: pg_advisory_lock in the same database pick other classes.
LOCK_CLASS = 0x6C6D6772
#: Advisory keys are 32-bit; group ids wrap into them (a collision only serializes two groups).
_KEY_MOD = 2**31 - 1
#: How long stop() lets a worker finish the batch in hand.
STOP_TIMEOUT_S = 3.0


@dataclass(slots=True)
class Draft:
    """A request for the next seq of a group: a message, announcement or recall."""

    group_id: int
    user_id: str
    name: str
    kind: str
    text: str
    ref: dict[str, Any] | None = None
    client_msg_id: str | None = None
    #: For a recall: the seq of the message it takes back.
    recall_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The seq a draft got; ``duplicate`` when it was stored by an earlier attempt."""

    seq: int
    duplicate: bool = False


_Item = tuple[Draft, asyncio.Future[Receipt]]


@dataclass(slots=True)
class _Worker:
    queue: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: Kept between batches: saves the pool's checkout ping and reset on every batch.
    conn: AsyncConnection | None = None


@dataclass(slots=True)
class _Outcome:
    receipts: dict[int, Receipt] = field(default_factory=dict)
    errors: dict[int, ProtocolError] = field(default_factory=dict)
    #: New rows in seq order per group, to publish after the commit.
    rows: list[dict[str, Any]] = field(default_factory=list)


class Sequencer:
    """Batches sends into transactions and publishes what they stored."""

    def __init__(
        self,
        db: Database,
        node: Node,
        settings: GroupSettings,
        metrics: Metrics,
        rooms: RoomLookup | None,
    ) -> None:
        self._db = db
        self._node = node
        self._settings = settings
        self._rooms = rooms
        self._advisory = db.dialect == "postgresql"
        count = settings.commit_workers or (4 if self._advisory else 1)
        self._workers = [_Worker() for _ in range(count)]
        self._closing = False
        self._batch_size = Histogram(
            "livemart_group_batch_size",
            "Group sends committed per write transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=metrics.registry,
        )
        self._commit_seconds = Histogram(
            "livemart_group_commit_seconds",
            "Write transaction of a batch of group sends, lock to publish",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )

    async def start(self) -> None:
        for number, worker in enumerate(self._workers):
            worker.task = asyncio.create_task(self._run(worker), name=f"group-writer-{number}")

    async def stop(self) -> None:
        """Finish the batches in hand (bounded), then fail whatever still waits."""
        self._closing = True
        tasks = [w.task for w in self._workers if w.task is not None]
        for worker in self._workers:
            worker.wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self._workers:
            for _, future in worker.queue:
                _settle(future, error=ProtocolError("unavailable", "server shutting down"))
            worker.queue.clear()
            if worker.conn is not None:
                with contextlib.suppress(Exception):
                    await worker.conn.close()
                worker.conn = None

    async def submit(self, draft: Draft) -> Receipt:
        """Queue ``draft``; return once it is committed (or raise why it was refused)."""
        if self._closing:
            raise ProtocolError("unavailable", "server shutting down")
        worker = self._workers[draft.group_id % len(self._workers)]
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        worker.queue.append((draft, future))
        worker.wake.set()
        return await future

    # --- the worker loop ------------------------------------------------------------

    async def _run(self, worker: _Worker) -> None:
        while True:
            if not worker.queue:
                if self._closing:
                    return
                worker.wake.clear()
                await worker.wake.wait()
                continue
            batch: list[_Item] = []
            while worker.queue and len(batch) < self._settings.max_batch:
                item = worker.queue.popleft()
                if not item[1].done():  # the caller went away before its turn
                    batch.append(item)
            if batch:
                await self._commit(worker, batch)

    async def _commit(self, worker: _Worker, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            batch = await self._commit_batch(worker, batch)
        except Exception as exc:
            await self._drop_connection(worker)
            error = _client_error(exc)
            if error.code == "internal":
                log.exception("group write batch failed")
            for _, future in batch:
                _settle(future, error=error)
        self._batch_size.observe(len(batch))
        self._commit_seconds.observe(time.perf_counter() - started)

    async def _commit_batch(self, worker: _Worker, batch: list[_Item]) -> list[_Item]:
        """Lock, write, commit, reply, publish, unlock; returns the items it handled."""
        if worker.conn is None:
            worker.conn = await self._db.engine.connect()
        conn = worker.conn
        try:
            async with conn.begin():
                batch = await self._lock(conn, worker, batch)
                outcome = await self._write(conn, [draft for draft, _ in batch])
            for index, (_, future) in enumerate(batch):
                error = outcome.errors.get(index)
                _settle(future, receipt=outcome.receipts.get(index), error=error)
            await self._publish(outcome.rows)
        finally:
            await self._unlock(worker)
        return batch

    async def _drop_connection(self, worker: _Worker) -> None:
        """Forget a connection that failed; the next batch opens a fresh one."""
        conn, worker.conn = worker.conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    # --- cross-process publish order (PostgreSQL) -----------------------------------

    async def _lock(self, conn: AsyncConnection, worker: _Worker, batch: list[_Item]) -> list[_Item]:
        """Take the advisory lock of every group in ``batch`` that is free; put the rest back.

        The locks are session locks: they outlive this transaction until _unlock.
        If none is free, wait for the first one: waiting while holding no other lock
        cannot deadlock, and it avoids polling.
        """
        if not self._advisory:
            return batch
        ids = sorted({draft.group_id for draft, _ in batch})
        result = await conn.execute(
            sa.text(
                "SELECT g FROM unnest(CAST(:ids AS bigint[])) AS t(g) "
                "WHERE pg_try_advisory_lock(:cls, CAST(g % :mod AS integer))"
            ),
            {"ids": ids, "cls": LOCK_CLASS, "mod": _KEY_MOD},
        )
        locked = {int(row[0]) for row in result}
        if not locked:
            await conn.execute(
                sa.text("SELECT pg_advisory_lock(:cls, :key)"),
                {"cls": LOCK_CLASS, "key": ids[0] % _KEY_MOD},
            )
            locked = {ids[0]}
        deferred = [item for item in batch if item[0].group_id not in locked]
        worker.queue.extendleft(reversed(deferred))  # ahead of newer sends, in order
        return [item for item in batch if item[0].group_id in locked]

    async def _unlock(self, worker: _Worker) -> None:
        """Release every advisory lock of the worker's session, outside any transaction.

        One plain statement on the driver connection (no BEGIN/COMMIT around it).
        If that fails the connection is dropped, which releases the locks as well.
        """
        if not self._advisory or worker.conn is None:
            return
        try:
            raw = await worker.conn.get_raw_connection()
            if raw.driver_connection is None:
                raise RuntimeError("connection already closed")
            await raw.driver_connection.execute("SELECT pg_advisory_unlock_all()")
        except Exception as exc:
            log.warning("dropping a connection whose advisory locks could not be released: %s", exc)
            await self._drop_connection(worker)

    # --- the transaction ------------------------------------------------------------

    async def _write(self, conn: AsyncConnection, drafts: Sequence[Draft]) -> _Outcome:
        now = time.time()
        ids = sorted({d.group_id for d in drafts})
        # Lock the groups' rows first: every later read in this transaction is then
        # current (kicks and joins take the same row lock), also on SQLite, where the
        # first write takes the database's write lock.
        result = await conn.execute(
            sa.update(groups)
            .where(groups.c.id.in_(ids))
            .values(last_seq=groups.c.last_seq)
            .returning(groups.c.id, groups.c.last_seq, groups.c.muted_all)
        )
        state = {int(r.id): (int(r.last_seq), bool(r.muted_all)) for r in result}
        targets = await self._recall_targets(conn, drafts)
        pairs = {(d.group_id, d.user_id) for d in drafts}
        pairs |= {(g, t.sender_id) for (g, _), t in targets.items()}
        roster = await self._members(conn, pairs)
        known = await self._known_client_ids(conn, drafts, ids)

        outcome = _Outcome()
        next_seq = {g: last for g, (last, _) in state.items()}
        recalled = {key: t.recalled_seq for key, t in targets.items() if t.recalled_seq is not None}
        recall_updates: list[dict[str, Any]] = []
        for index, draft in enumerate(drafts):
            g = draft.group_id
            try:
                if g not in state:
                    raise ProtocolError("not_member", "you are not a member of this group")
                member = roster.get((g, draft.user_id))
                client_key = (g, draft.user_id, draft.client_msg_id or "")
                if draft.client_msg_id and client_key in known:
                    outcome.receipts[index] = Receipt(known[client_key], duplicate=True)
                    continue
                if draft.kind == rules.RECALL:
                    target_key = (g, draft.recall_seq or 0)
                    rules.require_member(member)
                    if target_key in recalled:
                        outcome.receipts[index] = Receipt(recalled[target_key], duplicate=True)
                        continue
                    target = targets.get(target_key)
                    author = roster.get((g, target.sender_id)) if target is not None else None
                    rules.check_recall(
                        member, target, author, now=now, window_s=self._settings.recall_window_s
                    )
                else:
                    rules.check_send(member, muted_all=state[g][1], now=now)
                    if draft.kind == rules.ANNOUNCEMENT:
                        rules.require_manager(member)
            except ProtocolError as exc:
                outcome.errors[index] = exc
                continue
            seq = next_seq[g] = next_seq[g] + 1
            if draft.client_msg_id:
                known[client_key] = seq
            if draft.kind == rules.RECALL:
                recalled[target_key] = seq
                recall_updates.append({"g": g, "s": draft.recall_seq, "by": seq})
            outcome.receipts[index] = Receipt(seq)
            outcome.rows.append(
                {
                    "group_id": g,
                    "seq": seq,
                    "sender_id": draft.user_id,
                    "sender_name": draft.name,
                    "kind": draft.kind,
                    "text": draft.text,
                    "ref": draft.ref,
                    "client_msg_id": draft.client_msg_id,
                    "created_at": now,
                    "recalled_seq": None,
                }
            )
        if outcome.rows:
            await self._store(conn, outcome.rows, recall_updates, next_seq, state)
        return outcome

    async def _store(
        self,
        conn: AsyncConnection,
        rows: list[dict[str, Any]],
        recall_updates: list[dict[str, Any]],
        next_seq: dict[int, int],
        state: dict[int, tuple[int, bool]],
    ) -> None:
        await conn.execute(sa.insert(messages), rows)
        if recall_updates:
            await conn.execute(
                sa.update(messages)
                .where(messages.c.group_id == sa.bindparam("g"), messages.c.seq == sa.bindparam("s"))
                .values(recalled_seq=sa.bindparam("by"), text="", ref=None),
                recall_updates,
            )
        moved = [{"g": g, "s": seq} for g, seq in next_seq.items() if seq != state[g][0]]
        await conn.execute(
            sa.update(groups).where(groups.c.id == sa.bindparam("g")).values(last_seq=sa.bindparam("s")),
            moved,
        )
        # Posting reads the conversation up to one's own message (unread counts
        # never include what you wrote yourself).
        read_upto: dict[tuple[int, str], int] = {}
        for row in rows:
            read_upto[(row["group_id"], row["sender_id"])] = row["seq"]
        await conn.execute(
            sa.update(members)
            .where(
                members.c.group_id == sa.bindparam("g"),
                members.c.user_id == sa.bindparam("u"),
                members.c.read_seq < sa.bindparam("s"),
            )
            .values(read_seq=sa.bindparam("s")),
            [{"g": g, "u": u, "s": s} for (g, u), s in read_upto.items()],
        )

    async def _recall_targets(
        self, conn: AsyncConnection, drafts: Sequence[Draft]
    ) -> dict[tuple[int, int], rules.Sent]:
        keys = {(d.group_id, d.recall_seq) for d in drafts if d.kind == rules.RECALL and d.recall_seq}
        if not keys:
            return {}
        result = await conn.execute(
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

    async def _members(
        self, conn: AsyncConnection, pairs: set[tuple[int, str]]
    ) -> dict[tuple[int, str], rules.Member]:
        result = await conn.execute(
            sa.select(members.c.group_id, members.c.user_id, members.c.role, members.c.muted_until).where(
                sa.tuple_(members.c.group_id, members.c.user_id).in_(list(pairs))
            )
        )
        return {(int(r.group_id), r.user_id): rules.Member(r.user_id, r.role, r.muted_until) for r in result}

    async def _known_client_ids(
        self, conn: AsyncConnection, drafts: Sequence[Draft], ids: list[int]
    ) -> dict[tuple[int, str, str], int]:
        client_ids = {d.client_msg_id for d in drafts if d.client_msg_id}
        if not client_ids:
            return {}
        result = await conn.execute(
            sa.select(
                messages.c.group_id, messages.c.sender_id, messages.c.client_msg_id, messages.c.seq
            ).where(messages.c.group_id.in_(ids), messages.c.client_msg_id.in_(list(client_ids)))
        )
        return {(int(r.group_id), r.sender_id, r.client_msg_id): int(r.seq) for r in result}

    # --- after the commit -----------------------------------------------------------

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        """Publish the batch's messages, each group's in seq order, in one broker flush."""
        if not rows:
            return
        datas = [message_data(row) for row in rows]
        await with_room_status(datas, self._rooms)
        results = await asyncio.gather(
            *(
                self._node.publish(channel(row["group_id"]), event_name(row["kind"]), data, offset=row["seq"])
                for row, data in zip(rows, datas, strict=True)
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # Stored and acknowledged: subscribers get them through recovery instead.
            log.warning("%d group messages stored but not published: %s", len(failed), failed[0])


def _settle(
    future: asyncio.Future[Receipt],
    *,
    receipt: Receipt | None = None,
    error: ProtocolError | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif receipt is not None:
        future.set_result(receipt)
    else:
        future.set_exception(ProtocolError("internal", "no outcome for this message"))


def _client_error(exc: Exception) -> ProtocolError:
    """What the senders of a failed batch are told: ``unavailable`` for a lost database."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, (OperationalError, OSError, PoolTimeout, asyncio.TimeoutError)):
        return ProtocolError("unavailable", "database unavailable")
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or "connection" in str(exc.orig).lower()):
        return ProtocolError("unavailable", "database unavailable")
    return ProtocolError("internal", "could not store the message")
