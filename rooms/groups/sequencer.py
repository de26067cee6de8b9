"""The write path: every group message gets its seq here, durably and in order.

Sends are queued per process and committed in batches: one batch takes every send
waiting at that moment, for any number of groups. Each group is locked first, then
membership, mutes and duplicate ``client_msg_id``\\s are checked, seqs are handed out
after the group's ``last_seq``, and the messages, the new ``last_seq``\\s and read
cursors are stored in one commit (the SQL is in :mod:`.writers`). So seqs have no
gaps or duplicates whichever process sends, and a group's lock is held for one short
batch, never across groups or processes for long.

Replies go out after the commit; the messages are published after that, in seq
order, by the worker's publisher task while the worker already commits its next
batch (at most ``PUBLISH_AHEAD`` batches wait to be published). Publication order
must match seq order across processes too, or a client that saw seq 7 before seq 6
would resume after 7 and lose 6. On PostgreSQL the group lock is therefore a session
advisory lock, taken in the batch's first statement and held past the commit until
the publish is done; a group whose lock another process (or a kick) holds is neither
read nor written but left for the next batch rather than waited for. Within a process
each group belongs to one worker, whose publisher keeps its batches in order.
(SQLite needs no advisory lock in the usual single process; several processes
sharing one SQLite file get gap-free seqs but may publish out of order: see
docs/groups.md.)
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

from prometheus_client import Histogram

from realtime.broker import Publication
from realtime.errors import ProtocolError
from realtime.metrics import LATENCY_BUCKETS, Metrics
from realtime.node import Node
from realtime.storage import Database

from . import rules
from .events import RoomLookup, channel, event_name, message_data, with_room_status
from .settings import GroupSettings
from .writers import Changes, Lookup, Writer, open_writer

log = logging.getLogger("livemart.groups")

#: How long stop() lets a worker finish the batch in hand.
STOP_TIMEOUT_S = 3.0
#: Bound on publishing one batch (the batch's group locks are held until it ends).
PUBLISH_TIMEOUT_S = 5.0
#: Batches a group may be put back for (its lock busy elsewhere) before it is waited for.
PATIENCE = 3
#: Committed batches a worker may have waiting to be published before it stops committing.
PUBLISH_AHEAD = 2


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
class _Stored:
    """A committed batch waiting to be published: its new rows and the publish locks it took."""

    rows: list[dict[str, Any]]
    locked: list[int]


@dataclass(slots=True)
class _Worker:
    queue: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: The worker's own connection, kept between batches; None after a failure.
    writer: Writer | None = None
    #: group id -> batches in a row that could not lock it (another process had it).
    deferrals: dict[int, int] = field(default_factory=dict)
    #: Committed batches, published in order by ``publisher`` while the next one commits.
    outbox: asyncio.Queue[_Stored] = field(default_factory=lambda: asyncio.Queue(PUBLISH_AHEAD))
    publisher: asyncio.Task[None] | None = None
    #: Publish locks of published batches, one entry per lock taken; let go with the next claim.
    released: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Outcome:
    receipts: dict[int, Receipt] = field(default_factory=dict)
    errors: dict[int, ProtocolError] = field(default_factory=dict)
    #: What to write; its rows (new messages, each group's in seq order) are published after.
    changes: Changes = field(default_factory=Changes)


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
        count = settings.commit_workers or (2 if db.dialect == "postgresql" else 1)
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
        """Start the workers, with their connections open if the database answers.

        The first sends then wait for no connect and login; a database that is away
        now is tried again by the first batch.
        """
        writers = await asyncio.gather(
            *(open_writer(self._db) for _ in self._workers), return_exceptions=True
        )
        for number, (worker, writer) in enumerate(zip(self._workers, writers, strict=True)):
            if isinstance(writer, BaseException):
                log.warning("group writer %d not connected yet: %r", number, writer)
            else:
                worker.writer = writer
            worker.task = asyncio.create_task(self._run(worker), name=f"group-writer-{number}")
            worker.publisher = asyncio.create_task(
                self._publish_stored(worker), name=f"group-publisher-{number}"
            )

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
        # What was committed is published (bounded) before the locks go with the connections.
        await asyncio.gather(*(self._stop_publisher(worker) for worker in self._workers))
        await asyncio.gather(*(self._drop_writer(worker) for worker in self._workers))

    async def _stop_publisher(self, worker: _Worker) -> None:
        if worker.publisher is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await worker.outbox.join()
        worker.publisher.cancel()
        await asyncio.gather(worker.publisher, return_exceptions=True)

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
                if worker.released:  # idle: let other processes have these groups now
                    await self._release(worker)
                    continue
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
            outage = worker.writer is None or worker.writer.is_outage(exc)
            # Dropping the connection lets go of every publish lock it holds, so the
            # batches already committed are published first.
            await self._drain(worker)
            await self._drop_writer(worker)
            if outage:
                error = ProtocolError("unavailable", "database unavailable")
            else:
                log.exception("group write batch failed")
                error = ProtocolError("internal", "could not store the message")
            for _, future in batch:
                _settle(future, error=error)
        self._batch_size.observe(len(batch))
        self._commit_seconds.observe(time.perf_counter() - started)

    async def _commit_batch(self, worker: _Worker, batch: list[_Item]) -> list[_Item]:
        """Lock, write, commit, reply, and queue the batch for publishing.

        Returns the items it handled. The publish runs while the next batch commits;
        the batch's publish locks are let go once it is published.
        """
        if worker.writer is not None and not worker.writer.alive():
            await self._drain(worker)
            await self._drop_writer(worker)  # e.g. the database restarted since the last batch
        if worker.writer is None:
            worker.writer = await open_writer(self._db)
        writer = worker.writer
        async with writer.transaction():
            batch, locked, found = await self._claim(writer, worker, batch)
            outcome = await self._write(writer, [draft for draft, _ in batch], found)
        for index, (_, future) in enumerate(batch):
            error = outcome.errors.get(index)
            _settle(future, receipt=outcome.receipts.get(index), error=error)
        await worker.outbox.put(_Stored(outcome.changes.rows, locked))
        return batch

    async def _publish_stored(self, worker: _Worker) -> None:
        """Publish the worker's committed batches in commit order, then free their locks."""
        while True:
            stored = await worker.outbox.get()
            try:
                await self._publish(stored.rows)
            except Exception:
                log.exception("publishing a group batch failed; its messages stay stored")
            worker.released += stored.locked
            worker.wake.set()
            worker.outbox.task_done()

    async def _drain(self, worker: _Worker) -> None:
        """Wait until every committed batch of ``worker`` is published (bounded by each publish)."""
        if worker.publisher is not None and not worker.publisher.done():
            await worker.outbox.join()

    async def _drop_writer(self, worker: _Worker) -> None:
        """Forget a connection that failed; the next batch opens a fresh one."""
        writer, worker.writer = worker.writer, None
        worker.released.clear()  # the connection's locks go with it
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()

    async def _claim(
        self, writer: Writer, worker: _Worker, batch: list[_Item]
    ) -> tuple[list[_Item], list[int], Lookup]:
        """Lock every group in ``batch`` that is free and read them; put the rest back.

        Returns the items of the locked groups, the publish locks taken and the reads
        the checks need (:meth:`Writer.claim`). A group that another process keeps
        busy is waited for once it has been put back ``PATIENCE`` times, so it cannot
        starve behind the groups that are free. If none is free, wait for the first
        one. Either way the wait comes once this worker holds no lock at all (its
        published batches' locks let go), so it cannot deadlock, and nothing polls.
        """
        drafts = [draft for draft, _ in batch]
        ids = sorted({d.group_id for d in drafts})
        pairs = {(d.group_id, d.user_id) for d in drafts}
        keys = {(d.group_id, d.user_id, d.client_msg_id) for d in drafts if d.client_msg_id}
        waited: list[int] = []
        starving = [g for g in ids if worker.deferrals.get(g, 0) >= PATIENCE]
        if starving:
            waited = await self._wait_lock(writer, worker, starving[0])
        claim = await writer.claim(ids, pairs, keys, release=self._take_released(worker))
        if not waited and len(claim.busy) == len(ids):
            waited = await self._wait_lock(writer, worker, ids[0])
            claim = await writer.claim(ids, pairs, keys)
        busy = claim.busy
        # Deferred items go back to the front, so they are all in the next batch.
        worker.deferrals = {g: worker.deferrals.get(g, 0) + 1 for g in busy}
        deferred = [item for item in batch if item[0].group_id in busy]
        worker.queue.extendleft(reversed(deferred))  # ahead of newer sends, in order
        locked = [g for g in ids if g not in busy] + waited
        return [item for item in batch if item[0].group_id not in busy], locked, claim.found

    async def _wait_lock(self, writer: Writer, worker: _Worker, group_id: int) -> list[int]:
        """Wait for one group's publish lock, holding none; returns it, as taken once more."""
        await self._drain(worker)
        await writer.unlock(self._take_released(worker))
        await writer.wait_lock(group_id)
        return [group_id]

    async def _release(self, worker: _Worker) -> None:
        """Let go of published batches' locks; a writer that cannot is dropped, which does too."""
        if worker.writer is None:
            worker.released.clear()
            return
        try:
            await worker.writer.unlock(self._take_released(worker))
        except Exception as exc:
            log.warning("dropping a writer whose locks could not be released: %s", exc)
            await self._drain(worker)
            await self._drop_writer(worker)

    @staticmethod
    def _take_released(worker: _Worker) -> list[int]:
        released, worker.released = worker.released, []
        return released

    # --- the batch ------------------------------------------------------------------

    async def _write(self, writer: Writer, drafts: Sequence[Draft], found: Lookup) -> _Outcome:
        """Decide and store, once :meth:`_claim` holds the drafts' groups and read them.

        Every read is current until the store, since kicks, joins and mutes wait for
        the same lock (on SQLite: the same transaction's write lock). Recalls read
        their targets, and the targets' authors, here.
        """
        now = time.time()
        recalls = {(d.group_id, d.recall_seq) for d in drafts if d.kind == rules.RECALL and d.recall_seq}
        targets = await writer.targets(recalls) if recalls else {}
        authors = {(g, t.sender_id) for (g, _), t in targets.items()} - found.roster.keys()
        if authors:
            found.roster.update(await writer.members(authors))
        outcome = self._decide(drafts, found, targets, now)
        if outcome.changes.rows:
            await writer.store(outcome.changes)
        return outcome

    def _decide(
        self,
        drafts: Sequence[Draft],
        found: Lookup,
        targets: dict[tuple[int, int], rules.Sent],
        now: float,
    ) -> _Outcome:
        """Accept or refuse each draft in order and hand out seqs (no I/O)."""
        state, roster, known = found.state, found.roster, found.known
        outcome = _Outcome()
        changes = outcome.changes
        next_seq = {g: last for g, (last, _) in state.items()}
        recalled = {key: t.recalled_seq for key, t in targets.items() if t.recalled_seq is not None}
        for index, draft in enumerate(drafts):
            g = draft.group_id
            client_key = (g, draft.user_id, draft.client_msg_id or "")
            target_key = (g, draft.recall_seq or 0)
            try:
                if g not in state:
                    raise ProtocolError("not_member", "you are not a member of this group")
                member = roster.get((g, draft.user_id))
                if draft.client_msg_id and client_key in known:
                    outcome.receipts[index] = Receipt(known[client_key], duplicate=True)
                    continue
                if draft.kind == rules.RECALL:
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
                changes.recalls.append((g, target_key[1], seq))
            outcome.receipts[index] = Receipt(seq)
            changes.last_seq[g] = seq
            changes.read_upto[(g, draft.user_id)] = seq
            changes.rows.append(
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
        return outcome

    # --- after the commit -----------------------------------------------------------

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        """Publish the batch's messages, each group's in seq order, in one broker flush.

        Bounded: the group locks are held meanwhile, and a hung broker must not stall
        the groups on every process. What is not published is still stored and
        acknowledged; subscribers get it through recovery instead.
        """
        if not rows:
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                datas = [message_data(row) for row in rows]
                await with_room_status(datas, self._rooms)
                await self._node.publish_all(
                    [
                        Publication(channel(row["group_id"]), event_name(row["kind"]), data, row["seq"])
                        for row, data in zip(rows, datas, strict=True)
                    ]
                )
        except TimeoutError:
            log.warning("publishing %d group messages timed out; they stay stored", len(rows))
        except ProtocolError as exc:
            log.warning("group messages stored but not all published: %s", exc.message)


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
