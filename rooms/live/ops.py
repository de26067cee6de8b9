"""WebSocket ops of live rooms: comment, like, pin, unpin, moderate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from realtime.commands import Args
from realtime.errors import ProtocolError
from realtime.node import Node, Session

from .comments import CommentPoster
from .moderation import ACTIONS, Moderator
from .repository import parse_room_id
from .service import RoomService


def room_id_of(value: Any) -> str:
    """A room id from a command argument or path (a number or a numeric string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_request", "room must be a room id")
    if parse_room_id(value) is None:
        raise ProtocolError("not_found", f"no room {value[:20]}")
    return value


class RoomOps:
    def __init__(self, service: RoomService, comments: CommentPoster, moderator: Moderator) -> None:
        self._service = service
        self._comments = comments
        self._moderator = moderator

    def register(self, node: Node) -> None:
        node.add_op("comment", self.comment)
        node.add_op("like", self.like)
        node.add_op("pin", self.pin)
        node.add_op("unpin", self.unpin)
        node.add_op("moderate", self.moderate)

    async def comment(self, session: Session, args: Args) -> Mapping[str, Any]:
        room_id = room_id_of(args.raw("room"))
        # Generous bound here; CommentRules measures the trimmed text against the real limit.
        text = args.text("text", max_len=4 * self._comments.rules.max_len)
        return {"off": await self._comments.post(session.identity, room_id, text)}

    async def like(self, session: Session, args: Args) -> Mapping[str, Any]:
        room_id = room_id_of(args.raw("room"))
        count = args.opt_integer("count", 1, min=1, max=50)
        await self._service.like(session.identity, room_id, count or 1)
        return {}

    async def pin(self, session: Session, args: Args) -> Mapping[str, Any]:
        user_id = session.identity.require_user()
        room_id = room_id_of(args.raw("room"))
        await self._service.pin(user_id, room_id, product_id_of(args.raw("product_id")))
        return {}

    async def unpin(self, session: Session, args: Args) -> Mapping[str, Any]:
        user_id = session.identity.require_user()
        room_id = room_id_of(args.raw("room"))
        raw = args.raw("product_id")
        await self._service.unpin(user_id, room_id, None if raw is None else product_id_of(raw))
        return {}

    async def moderate(self, session: Session, args: Args) -> Mapping[str, Any]:
        host_id = session.identity.require_user()
        room_id = room_id_of(args.raw("room"))
        action = args.text("action", max_len=32)
        if action not in ACTIONS:
            raise ProtocolError("bad_request", f"action must be one of {', '.join(ACTIONS)}")
        target = args.raw("user_id")
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        if target is not None and (not isinstance(target, str) or len(target) > 128):
            raise ProtocolError("bad_request", "user_id must be a user id")
        await self._moderator.apply(
            host_id,
            room_id,
            action,
            user_id=target,
            seconds=args.opt_integer("seconds", min=0),
            off=args.opt_integer("off", min=1),
        )
        return {}


def product_id_of(value: Any) -> str:
    """Product ids are opaque strings; numbers are accepted and turned into strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ProtocolError("bad_request", "product_id must be a product id")
    return value
