"""The PostgreSQL write path's locks: which groups a batch takes, and when it lets go.

A second session stands in for another process, or for a kick: it holds a group's
publish lock, or probes the locks the writer holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from rooms.groups import GroupSettings
from rooms.groups.sequencer import Draft
from rooms.groups.writers import KEY_MOD, LOCK_CLASS, Changes, PostgresWriter
from tests.test_groups_api import running


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def writer(postgres_url: str) -> AsyncIterator[PostgresWriter]:
    """A writer's connection, as a sequencer worker holds one."""
    writer = await PostgresWriter.connect(postgres_url)
    try:
        yield writer
    finally:
        await writer.close()


@pytest.fixture
async def other(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(postgres_url))
    try:
        yield conn
    finally:
        await conn.close()


async def _try_lock(conn: asyncpg.Connection, group_id: int) -> bool:
    """Take a group's publish lock if it is free (and keep it)."""
    got: bool = await conn.fetchval(
        "SELECT pg_try_advisory_lock($1, ($2::bigint % $3)::int)", LOCK_CLASS, group_id, KEY_MOD
    )
    return got


async def test_a_busy_group_is_left_alone_and_locks_outlive_the_store(
    postgres_url: str, other: asyncpg.Connection, writer: PostgresWriter
) -> None:
    async with running(postgres_url) as server:
        free, busy = await server.group_with("owner"), await server.group_with("owner")
    assert await _try_lock(other, busy)
    async with writer.transaction():
        pairs = {(free, "owner"), (busy, "owner")}
        claim = await writer.claim([free, busy, 10**9], pairs, set())
        assert claim.busy == {busy}
        assert set(claim.found.state) == {free}  # the missing group is claimed but has no row
        assert set(claim.found.roster) == {(free, "owner")}  # a busy group is not read
        await writer.store(Changes(last_seq={free: 1}))
    assert not await _try_lock(other, free), "the publish lock ends with unlock, not the store"
    await writer.unlock([free, 10**9])
    assert await _try_lock(other, free)


async def test_a_kick_waits_for_the_batch_holding_the_group(
    postgres_url: str, other: asyncpg.Connection, writer: PostgresWriter
) -> None:
    """A kick cannot land between a batch's membership reads and its store and publish."""
    async with running(postgres_url) as server:
        gid = await server.group_with("owner", "member")
        claim = await writer.claim([gid], {(gid, "member")}, set())
        assert (gid, "member") in claim.found.roster
        kick = asyncio.ensure_future(server.chats.store.remove(gid, "owner", "member"))
        await asyncio.sleep(0.3)
        assert not kick.done(), "the kick went ahead while a batch held the group"
        await writer.unlock([gid])
        assert await asyncio.wait_for(kick, 5) is True
        claim = await writer.claim([gid], {(gid, "member")}, set())
        assert claim.busy == set() and (gid, "member") not in claim.found.roster
        await writer.unlock([gid])


async def test_a_group_mid_change_is_busy_and_read_fresh_once_changed(
    postgres_url: str, other: asyncpg.Connection, writer: PostgresWriter
) -> None:
    """A kick in progress holds the group: the claim leaves it; once committed, it is seen."""
    async with running(postgres_url) as server:
        gid = await server.group_with("owner", "member")
        change = other.transaction()
        await change.start()
        await other.execute(
            "SELECT pg_advisory_xact_lock($1, ($2::bigint % $3)::int)", LOCK_CLASS, gid, KEY_MOD
        )
        await other.execute("DELETE FROM group_members WHERE group_id = $1 AND user_id = 'member'", gid)
        claim = await writer.claim([gid], {(gid, "member")}, set())
        assert claim.busy == {gid} and not claim.found.roster and not claim.found.state
        await change.commit()
        claim = await writer.claim([gid], {(gid, "member")}, set())
        assert claim.busy == set() and gid in claim.found.state
        assert (gid, "member") not in claim.found.roster
        await writer.unlock([gid])


async def test_a_lock_taken_twice_is_held_until_both_let_go(
    postgres_url: str, other: asyncpg.Connection, writer: PostgresWriter
) -> None:
    """A group in two batches in a row stays locked until the later batch is published."""
    async with running(postgres_url) as server:
        gid = await server.group_with("owner")
    assert (await writer.claim([gid], set(), set())).busy == set()
    # The next batch, while the first is published; then the first lets go, once.
    assert (await writer.claim([gid], set(), set())).busy == set()
    assert (await writer.claim([], set(), set(), release=[gid])).busy == set()
    assert not await _try_lock(other, gid)
    await writer.unlock([gid])
    assert await _try_lock(other, gid)


async def test_a_failed_store_writes_nothing_and_the_writer_stays_usable(
    postgres_url: str, writer: PostgresWriter
) -> None:
    async with running(postgres_url) as server:
        gid = await server.group_with("owner")
    await writer.claim([gid], set(), set())
    row = {
        "group_id": gid, "seq": 1, "sender_id": "owner", "sender_name": "Owner", "kind": "text",
        "text": "hi", "ref": None, "client_msg_id": None, "created_at": 0.0, "recalled_seq": None,
    }  # fmt: skip
    # The same seq twice: the insert fails, and with it the head and cursor updates.
    bad = Changes(rows=[row, row], last_seq={gid: 1}, read_upto={(gid, "owner"): 1})
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await writer.store(bad)
    assert writer.alive()
    assert (await writer.claim([gid], set(), set())).found.state[gid][0] == 0
    await writer.unlock([gid])
    await writer.unlock([gid])


def _draft(gid: int, text: str) -> Draft:
    return Draft(gid, "owner", "Owner", "text", text, client_msg_id=text)


async def test_a_batch_defers_the_group_another_process_holds_and_stores_the_rest(
    postgres_url: str, other: asyncpg.Connection
) -> None:
    async with running(postgres_url, GroupSettings(commit_workers=1)) as server:
        held, free = await server.group_with("owner"), await server.group_with("owner")
        assert await _try_lock(other, held)
        submit = server.chats.sequencer.submit
        # Queued in one tick, so they share the first batch.
        waiting = asyncio.ensure_future(submit(_draft(held, "late")))
        sent = await asyncio.gather(*(submit(_draft(free, f"f{i}")) for i in range(3)))
        assert [r.seq for r in sent] == [1, 2, 3]
        await asyncio.sleep(0.2)  # the next batch, the held group alone, now waits for its lock
        assert not waiting.done()
        await other.execute("SELECT pg_advisory_unlock_all()")
        assert (await asyncio.wait_for(waiting, 5)).seq == 1
        assert (await submit(_draft(held, "next"))).seq == 2


async def test_an_idle_writer_lets_go_of_its_groups_once_they_are_published(
    postgres_url: str, other: asyncpg.Connection
) -> None:
    async with running(postgres_url, GroupSettings(commit_workers=1)) as server:
        gid = await server.group_with("owner")
        assert (await server.chats.sequencer.submit(_draft(gid, "one"))).seq == 1
        for _ in range(100):  # the publish runs after the reply, then the lock goes
            if await _try_lock(other, gid):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the group stayed locked after its message was published")
        # Now another process holds it: the next send waits for it, then goes on in order.
        waiting = asyncio.ensure_future(server.chats.sequencer.submit(_draft(gid, "two")))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await other.execute("SELECT pg_advisory_unlock_all()")
        assert (await asyncio.wait_for(waiting, 5)).seq == 2


async def test_the_client_msg_id_probe_reads_one_index_entry_however_long_the_group(
    postgres_url: str, other: asyncpg.Connection, writer: PostgresWriter
) -> None:
    """A plan made while the table was empty must not stay and read every message of
    the group for each probe (nothing analyzes the table here, as in a young deployment
    between autovacuum's visits)."""
    async with running(postgres_url) as server:
        gid = await server.group_with("owner")
    probe = {(gid, "owner", "not-sent-yet")}
    for _ in range(8):  # past the point where a cached generic plan would take over
        await writer.claim([gid], set(), probe)
    # Many groups, each a few hundred messages long, as in a day of traffic.
    others = [await _bare_group(other, n) for n in range(200)]
    await other.execute(
        """INSERT INTO group_messages (group_id, seq, sender_id, sender_name, kind, text,
             client_msg_id, created_at)
           SELECT g, s, 'owner', 'Owner', 'text', 'x', 'm' || s, 0
           FROM unnest($1::bigint[]) AS g, generate_series(1, 300) AS s""",
        [gid, *others],
    )

    async def fetched() -> int:
        await writer._conn.execute("SELECT pg_stat_force_next_flush()")
        await other.execute("SELECT pg_stat_clear_snapshot()")
        count: int = await other.fetchval(
            "SELECT idx_tup_fetch FROM pg_stat_user_tables WHERE relname = 'group_messages'"
        )
        return count

    before = await fetched()
    claim = await writer.claim([gid], set(), probe | {(gid, "owner", "m7")})
    assert claim.found.known == {(gid, "owner", "m7"): 7}
    assert await fetched() - before <= 4
    await writer.unlock([gid] * 9)


async def _bare_group(conn: asyncpg.Connection, n: int) -> int:
    """A bare group row (no members), straight in SQL."""
    gid: int = await conn.fetchval(
        """INSERT INTO chat_groups (name, owner_id, epoch, last_seq, member_count, muted_all, created_at)
           VALUES ($1, 'owner', 'e', 0, 0, false, 0) RETURNING id""",
        f"bulk {n}",
    )
    return gid
