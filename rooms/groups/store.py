"""Group state in SQL: groups, membership, invites, read cursors and history reads.

Messages are written only by :mod:`.sequencer`. Every change to a group's members or
settings first takes the group's lock (:func:`.writers.lock_for_change`: on PostgreSQL
the publish lock the write path holds from its reads until the batch is published,
and the group's row), so a kick and a send to the same group are ordered, a message
is never checked against settings that change before it is stored, and the member
count never passes the cap.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from realtime.errors import ProtocolError
from realtime.storage import Database

from . import rules
from .settings import GroupSettings
from .tables import groups, invites, members, messages
from .writers import lock_for_change, sql_outage

#: Columns of a group as a member sees it (with their own member row).
_VIEW = (
    groups.c.id,
    groups.c.name,
    groups.c.owner_id,
    groups.c.member_count,
    groups.c.last_seq,
    groups.c.muted_all,
    members.c.role,
    members.c.read_seq,
    members.c.muted_until,
)


# The reads every subscribe and history page makes, built once: constructing a
# statement costs more CPU than running it.
_VIEW_ONE = (
    sa.select(*_VIEW)
    .join_from(groups, members, members.c.group_id == groups.c.id)
    .where(groups.c.id == sa.bindparam("g"), members.c.user_id == sa.bindparam("u"))
)
_MEMBER = sa.select(members.c.role, members.c.muted_until).where(
    members.c.group_id == sa.bindparam("g"), members.c.user_id == sa.bindparam("u")
)
_POSITION = sa.select(groups.c.last_seq, groups.c.epoch).where(groups.c.id == sa.bindparam("g"))
_MESSAGES_AFTER = (
    sa.select(messages)
    .where(
        messages.c.group_id == sa.bindparam("g"),
        messages.c.seq > sa.bindparam("after"),
        messages.c.seq <= sa.bindparam("upto"),
    )
    .order_by(messages.c.seq)
    .limit(sa.bindparam("limit"))
)


def group_view(row: Any) -> dict[str, Any]:
    """What ``GET /api/groups/{id}``, ``/api/me/groups`` and a subscribe snapshot say."""
    return {
        "id": int(row.id),
        "name": row.name,
        "owner_id": row.owner_id,
        "members": int(row.member_count),
        "last_seq": int(row.last_seq),
        "muted_all": bool(row.muted_all),
        "role": row.role,
        "read_seq": int(row.read_seq),
        "unread": rules.unread(int(row.last_seq), int(row.read_seq)),
    }


class GroupStore:
    """SQL reads and membership writes of group chats."""

    def __init__(self, db: Database, settings: GroupSettings) -> None:
        self._db = db
        self._settings = settings

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads, in autocommit: no BEGIN/COMMIT round trips.

        Subscribes make three reads each; a reconnect storm of a big group must not
        tie up the shared pool. Losing the database, or waiting too long for a pooled
        connection, becomes ``unavailable``.
        """
        try:
            async with self._db.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except Exception as exc:
            if sql_outage(exc):
                raise ProtocolError("unavailable", "database unavailable") from exc
            raise

    # --- groups and their members ---------------------------------------------------

    async def create(self, owner_id: str, owner_name: str, name: str) -> dict[str, Any]:
        now = time.time()
        async with self._db.begin() as conn:
            result = await conn.execute(
                sa.insert(groups)
                .values(
                    name=name,
                    owner_id=owner_id,
                    epoch=secrets.token_hex(4),
                    last_seq=0,
                    member_count=1,
                    muted_all=False,
                    created_at=now,
                )
                .returning(groups.c.id)
            )
            group_id = int(result.scalar_one())
            await conn.execute(
                sa.insert(members).values(
                    group_id=group_id,
                    user_id=owner_id,
                    name=owner_name,
                    role="owner",
                    read_seq=0,
                    muted_until=None,
                    joined_at=now,
                )
            )
            return await self._view(conn, group_id, owner_id)

    async def view(self, group_id: int, user_id: str) -> dict[str, Any]:
        """The group as ``user_id`` sees it; ``not_member`` for anyone else."""
        async with self._read() as conn:
            return await self._view(conn, group_id, user_id)

    async def _view(self, conn: AsyncConnection, group_id: int, user_id: str) -> dict[str, Any]:
        result = await conn.execute(_VIEW_ONE, {"g": group_id, "u": user_id})
        row = result.first()
        if row is None:
            raise ProtocolError("not_member", "you are not a member of this group")
        return group_view(row)

    async def my_groups(self, user_id: str) -> list[dict[str, Any]]:
        async with self._read() as conn:
            result = await conn.execute(
                sa.select(*_VIEW)
                .join_from(groups, members, members.c.group_id == groups.c.id)
                .where(members.c.user_id == user_id)
                .order_by(groups.c.id)
            )
            return [group_view(row) for row in result]

    async def role(self, group_id: int, user_id: str) -> str | None:
        async with self._read() as conn:
            member = await _member(conn, group_id, user_id)
        return None if member is None else member.role

    async def members(self, group_id: int, user_id: str) -> list[dict[str, Any]]:
        """The member list, for members only (at most the member cap, so one page)."""
        async with self._read() as conn:
            if await _member(conn, group_id, user_id) is None:
                raise ProtocolError("not_member", "you are not a member of this group")
            result = await conn.execute(
                sa.select(members.c.user_id, members.c.name, members.c.role, members.c.muted_until)
                .where(members.c.group_id == group_id)
                .order_by(members.c.joined_at, members.c.user_id)
            )
            now = time.time()
            return [
                {
                    "user_id": r.user_id,
                    "name": r.name,
                    "role": r.role,
                    "muted": r.muted_until is not None and r.muted_until > now,
                }
                for r in result
            ]

    async def remove(self, group_id: int, actor_id: str, target_id: str) -> bool:
        """Kick ``target_id`` (or leave, when it is the actor); True if it was a kick."""
        self_leave = actor_id == target_id
        async with self._db.begin() as conn:
            if await _lock_group(conn, group_id) is None:
                raise ProtocolError("not_member", "you are not a member of this group")
            actor = await _member(conn, group_id, actor_id)
            target = actor if self_leave else await _member(conn, group_id, target_id)
            rules.check_kick(actor, target, self_leave=self_leave)
            await conn.execute(
                sa.delete(members).where(members.c.group_id == group_id, members.c.user_id == target_id)
            )
            await conn.execute(
                sa.update(groups)
                .where(groups.c.id == group_id)
                .values(member_count=groups.c.member_count - 1)
            )
        return not self_leave

    async def set_role(self, group_id: int, actor_id: str, target_id: str, role: str) -> None:
        async with self._db.begin() as conn:
            await _lock_group(conn, group_id)
            actor = await _member(conn, group_id, actor_id)
            target = await _member(conn, group_id, target_id)
            rules.check_set_role(actor, target, role)
            await conn.execute(
                sa.update(members)
                .where(members.c.group_id == group_id, members.c.user_id == target_id)
                .values(role=role)
            )

    async def set_mute(self, group_id: int, actor_id: str, target_id: str, seconds: int) -> float | None:
        """Mute ``target_id`` for ``seconds`` (0 lifts it); returns when it ends."""
        until = time.time() + seconds if seconds > 0 else None
        async with self._db.begin() as conn:
            await _lock_group(conn, group_id)
            actor = await _member(conn, group_id, actor_id)
            target = await _member(conn, group_id, target_id)
            rules.check_moderate(actor, target)
            await conn.execute(
                sa.update(members)
                .where(members.c.group_id == group_id, members.c.user_id == target_id)
                .values(muted_until=until)
            )
        return until

    async def set_mute_all(self, group_id: int, actor_id: str, muted: bool) -> None:
        async with self._db.begin() as conn:
            await _lock_group(conn, group_id)
            rules.require_manager(await _member(conn, group_id, actor_id))
            await conn.execute(sa.update(groups).where(groups.c.id == group_id).values(muted_all=muted))

    # --- invites ----------------------------------------------------------------------

    async def create_invite(
        self, group_id: int, actor_id: str, *, ttl_s: int | None, max_uses: int | None
    ) -> dict[str, Any]:
        now = time.time()
        ttl = self._settings.invite_ttl_s if ttl_s is None else ttl_s
        code = secrets.token_urlsafe(12)
        expires_at = now + ttl if ttl > 0 else None
        async with self._db.begin() as conn:
            rules.require_manager(await _member(conn, group_id, actor_id))
            await conn.execute(
                sa.insert(invites).values(
                    code=code,
                    group_id=group_id,
                    created_by=actor_id,
                    expires_at=expires_at,
                    max_uses=max_uses,
                    uses=0,
                    revoked=False,
                    created_at=now,
                )
            )
        return {"code": code, "group_id": group_id, "expires_at": expires_at, "max_uses": max_uses}

    async def revoke_invite(self, group_id: int, actor_id: str, code: str) -> None:
        async with self._db.begin() as conn:
            rules.require_manager(await _member(conn, group_id, actor_id))
            result = await conn.execute(
                sa.update(invites)
                .where(invites.c.code == code, invites.c.group_id == group_id)
                .values(revoked=True)
            )
            if result.rowcount == 0:
                raise ProtocolError("not_found", "no such invite in this group")

    async def join(self, code: str, user_id: str, name: str) -> tuple[dict[str, Any], bool]:
        """Join by invite code; returns the group and whether the caller is new to it.

        Joining a group one is already in uses up nothing.
        """
        now = time.time()
        async with self._db.begin() as conn:
            found = await conn.execute(sa.select(invites.c.group_id).where(invites.c.code == code))
            group_id = found.scalar_one_or_none()
            if group_id is None:
                raise ProtocolError("not_found", "no such invite code")
            group = await _lock_group(conn, group_id)
            if group is None:
                raise ProtocolError("not_found", "no such invite code")
            if await _member(conn, group_id, user_id) is not None:
                return await self._view(conn, group_id, user_id), False
            used = await conn.execute(
                sa.update(invites)
                .where(
                    invites.c.code == code,
                    invites.c.revoked.is_(False),
                    sa.or_(invites.c.expires_at.is_(None), invites.c.expires_at > now),
                    sa.or_(invites.c.max_uses.is_(None), invites.c.uses < invites.c.max_uses),
                )
                .values(uses=invites.c.uses + 1)
            )
            if used.rowcount == 0:
                raise await _invalid_invite(conn, code, now)
            if group.member_count >= self._settings.member_cap:
                raise ProtocolError(
                    "limit_exceeded", f"the group is full ({self._settings.member_cap} members)"
                )
            await conn.execute(
                sa.insert(members).values(
                    group_id=group_id,
                    user_id=user_id,
                    name=name,
                    role="member",
                    read_seq=group.last_seq,  # history is readable; unread starts now
                    muted_until=None,
                    joined_at=now,
                )
            )
            await conn.execute(
                sa.update(groups)
                .where(groups.c.id == group_id)
                .values(member_count=groups.c.member_count + 1)
            )
            return await self._view(conn, group_id, user_id), True

    # --- reading messages -------------------------------------------------------------

    async def history(
        self, group_id: int, user_id: str, *, after: int, limit: int
    ) -> tuple[list[Row[Any]], int]:
        """Messages after ``after`` in seq order, and the group's last seq."""
        async with self._read() as conn:
            view = await self._view(conn, group_id, user_id)
            rows = await _messages_after(conn, group_id, after, view["last_seq"], limit)
        return rows, view["last_seq"]

    async def messages_after(self, group_id: int, after: int, upto: int) -> list[Row[Any]]:
        async with self._read() as conn:
            return await _messages_after(conn, group_id, after, upto, upto - after)

    async def position(self, group_id: int) -> tuple[int, str] | None:
        """(last seq, epoch) of the group's stream, or None if there is no such group."""
        async with self._read() as conn:
            result = await conn.execute(_POSITION, {"g": group_id})
            row = result.first()
        return None if row is None else (int(row.last_seq), row.epoch)

    async def mark_read(self, group_id: int, user_id: str, seq: int) -> int:
        """Move the read cursor forward to ``seq`` (never back, never past the end)."""
        async with self._db.begin() as conn:
            view = await self._view(conn, group_id, user_id)
            upto = min(seq, view["last_seq"])
            if upto > view["read_seq"]:
                await conn.execute(
                    sa.update(members)
                    .where(
                        members.c.group_id == group_id,
                        members.c.user_id == user_id,
                        members.c.read_seq < upto,
                    )
                    .values(read_seq=upto)
                )
            return rules.unread(view["last_seq"], max(upto, view["read_seq"]))


async def _member(conn: AsyncConnection, group_id: int, user_id: str) -> rules.Member | None:
    result = await conn.execute(_MEMBER, {"g": group_id, "u": user_id})
    row = result.first()
    return None if row is None else rules.Member(user_id, row.role, row.muted_until)


async def _lock_group(conn: AsyncConnection, group_id: int) -> Row[Any] | None:
    """Take the group's lock against the write path, lock its row, and return it."""
    await lock_for_change(conn, group_id)
    result = await conn.execute(
        sa.update(groups)
        .where(groups.c.id == group_id)
        .values(member_count=groups.c.member_count)
        .returning(groups.c.member_count, groups.c.last_seq)
    )
    return result.first()


async def _messages_after(
    conn: AsyncConnection, group_id: int, after: int, upto: int, limit: int
) -> list[Row[Any]]:
    if limit <= 0 or after >= upto:
        return []
    result = await conn.execute(
        _MESSAGES_AFTER, {"g": group_id, "after": after, "upto": upto, "limit": limit}
    )
    return list(result)


async def _invalid_invite(conn: AsyncConnection, code: str, now: float) -> ProtocolError:
    """Why an existing invite could not be used."""
    result = await conn.execute(sa.select(invites).where(invites.c.code == code))
    invite = result.one()
    if invite.revoked:
        return ProtocolError("expired", "this invite was revoked")
    if invite.expires_at is not None and invite.expires_at <= now:
        return ProtocolError("expired", "this invite has expired")
    return ProtocolError("expired", "this invite has been used up")
