"""WebSocket ops of group chats: ``group.send``, ``group.read``, ``group.recall``,
``group.announce``. Each is a thin adapter over a GroupChats action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from realtime.commands import Args
from realtime.errors import ProtocolError
from realtime.node import Node, Session

from .namespace import parse_group_id

if TYPE_CHECKING:
    from .service import GroupChats


def group_arg(args: Args) -> int:
    """The ``group`` argument: a group id as a number or a string of digits."""
    group_id = parse_group_id(args.raw("group"))
    if group_id is None:
        raise ProtocolError("bad_request", "group must be a group id")
    return group_id


def register(node: Node, chats: GroupChats) -> None:
    async def send(session: Session, args: Args) -> Mapping[str, Any]:
        receipt = await chats.send(session.identity, group_arg(args), args)
        return {"seq": receipt.seq}

    async def read(session: Session, args: Args) -> Mapping[str, Any]:
        unread = await chats.read(session.identity, group_arg(args), args.integer("seq", min=0))
        return {"unread": unread}

    async def recall(session: Session, args: Args) -> Mapping[str, Any]:
        receipt = await chats.recall(session.identity, group_arg(args), args.integer("seq", min=1))
        return {"seq": receipt.seq}

    async def announce(session: Session, args: Args) -> Mapping[str, Any]:
        receipt = await chats.announce(session.identity, group_arg(args), args)
        return {"seq": receipt.seq}

    node.add_op("group.send", send)
    node.add_op("group.read", read)
    node.add_op("group.recall", recall)
    node.add_op("group.announce", announce)
