"""GroupChats: the group-chat module (tables, channels, ops, routes) and its actions.

HTTP routes and WebSocket ops both call the actions here, so the two surfaces
validate the same way and publish the same events.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from realtime.auth import Identity
from realtime.commands import Args
from realtime.errors import ProtocolError
from realtime.server import Core

from . import rules
from .events import LiveRoomDirectory, RoomLookup, channel, message_data, with_room_status
from .namespace import MAX_ID, GroupNamespace, parse_group_id
from .ops import register as register_ops
from .routes import build as build_routes
from .sequencer import Draft, Receipt, Sequencer
from .settings import GroupSettings
from .store import GroupStore

log = logging.getLogger("livemart.groups")


class GroupChats:
    """Merchant group chats (issue 5), plugged into the transport core."""

    migrations: Path | None = Path(__file__).with_name("migrations") / "versions"

    def __init__(self, core: Core, *, rooms: LiveRoomDirectory | None, settings: GroupSettings) -> None:
        self.core = core
        self.settings = settings
        self._rooms: RoomLookup | None = rooms.room if rooms is not None else None
        self.store = GroupStore(core.db, settings)
        self.sequencer = Sequencer(core.db, core.node, settings, core.metrics, self._rooms)
        core.node.add_namespace(
            GroupNamespace(core.broker, self.store, recovery_limit=settings.recovery_limit, rooms=self._rooms)
        )
        register_ops(core.node, self)

    def routes(self) -> list[BaseRoute]:
        return build_routes(self)

    async def start(self) -> None:
        await self.sequencer.start()

    async def stop(self) -> None:
        await self.sequencer.stop()

    # --- for other domains --------------------------------------------------------

    async def role(self, group_id: int | str, user_id: str) -> str | None:
        """``owner`` | ``admin`` | ``member``, or None for non-members (commerce uses it)."""
        parsed = parse_group_id(group_id)
        return None if parsed is None else await self.store.role(parsed, user_id)

    # --- groups and membership ------------------------------------------------------

    async def create(self, identity: Identity, name: str) -> dict[str, Any]:
        user = identity.require_user()
        rules.check_storable("name", name)
        return await self.store.create(user, rules.display_name(identity.name), name)

    async def join(self, identity: Identity, code: str) -> dict[str, Any]:
        user = identity.require_user()
        rules.check_storable("code", code)
        name = rules.display_name(identity.name)
        group, joined = await self.store.join(code, user, name)
        if joined:
            joined_data = {"user_id": user, "name": name}
            await self._announce_membership(group["id"], "member.join", joined_data)
        return group

    async def remove(self, identity: Identity, group_id: int, target_id: str) -> None:
        """Kick ``target_id`` or, for oneself, leave; either way their live
        subscriptions to the group end on every process at once."""
        actor = identity.require_user()
        kicked = await self.store.remove(group_id, actor, target_id)
        reason = "removed from the group" if kicked else "you left the group"
        await self.core.node.kick(channel(group_id), target_id, code="not_member", reason=reason)
        await self._announce_membership(group_id, "member.leave", {"user_id": target_id, "kicked": kicked})

    async def _announce_membership(self, group_id: int, event: str, data: dict[str, Any]) -> None:
        """Join/leave events are live-only: the member list and count are the durable truth."""
        try:
            await self.core.node.publish(channel(group_id), event, data, ephemeral=True)
        except ProtocolError as exc:
            log.warning("could not publish %s on group %d: %s", event, group_id, exc.message)

    # --- messages -------------------------------------------------------------------

    async def send(self, identity: Identity, group_id: int, args: Args) -> Receipt:
        """``group.send`` / ``POST …/messages``: durable before it returns a seq."""
        user = identity.require_user()
        kind = args.opt_text("kind", max_len=16) or "text"
        if kind not in rules.SEND_KINDS:
            raise ProtocolError("bad_request", f"kind must be one of {', '.join(rules.SEND_KINDS)}")
        text = args.text("text", max_len=self.settings.max_text_chars, optional=True)
        rules.check_text(kind, text, max_chars=self.settings.max_text_chars)
        ref = rules.card_ref(kind, args.raw("ref"))
        client_msg_id = args.text("client_msg_id", max_len=rules.MAX_CLIENT_ID_CHARS)
        rules.check_storable("client_msg_id", client_msg_id)
        if kind == "room_card" and ref is not None and self._rooms is not None:
            await self._require_room(ref["room_id"])
        name = rules.display_name(identity.name)
        draft = Draft(group_id, user, name, kind, text, ref, client_msg_id)
        return await self.sequencer.submit(draft)

    async def _require_room(self, room_id: str) -> None:
        if self._rooms is not None and await self._rooms(room_id) is None:
            raise ProtocolError("not_found", "no such live room")

    async def announce(self, identity: Identity, group_id: int, args: Args) -> Receipt:
        """An owner's or admin's announcement: durable and ordered like a message."""
        user = identity.require_user()
        text = args.text("text", max_len=self.settings.max_text_chars)
        rules.check_text(rules.ANNOUNCEMENT, text, max_chars=self.settings.max_text_chars)
        client_msg_id = args.opt_text("client_msg_id", max_len=rules.MAX_CLIENT_ID_CHARS)
        if client_msg_id is not None:
            rules.check_storable("client_msg_id", client_msg_id)
        name = rules.display_name(identity.name)
        draft = Draft(group_id, user, name, rules.ANNOUNCEMENT, text, None, client_msg_id)
        return await self.sequencer.submit(draft)

    async def recall(self, identity: Identity, group_id: int, seq: int) -> Receipt:
        """Take a message back: its text is erased and a ``recall`` tombstone gets a new seq."""
        user = identity.require_user()
        if not 0 < seq <= MAX_ID:
            raise ProtocolError("not_found", "no such message")
        name = rules.display_name(identity.name)
        draft = Draft(group_id, user, name, rules.RECALL, "", {"seq": seq}, None, recall_seq=seq)
        return await self.sequencer.submit(draft)

    async def read(self, identity: Identity, group_id: int, seq: int) -> int:
        return await self.store.mark_read(group_id, identity.require_user(), seq)

    async def history(self, identity: Identity, group_id: int, *, after: int, limit: int) -> dict[str, Any]:
        user = identity.require_user()
        rows, last_seq = await self.store.history(group_id, user, after=after, limit=limit)
        page = [message_data(row._mapping) for row in rows]
        await with_room_status(page, self._rooms)
        upto = page[-1]["seq"] if page else max(after, 0)
        return {"messages": page, "last_seq": last_seq, "more": upto < last_seq}
