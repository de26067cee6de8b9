"""HTTP endpoints of group chats (see the contract's table and docs/groups.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from realtime.errors import ProtocolError
from realtime.http import JSON, identity, json_body

from .namespace import parse_group_id

if TYPE_CHECKING:
    from .service import GroupChats

#: Longest group name.
MAX_NAME_CHARS = 100


def _query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProtocolError("bad_request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ProtocolError("bad_request", f"{name} must be in [{low}, {high}]")
    return value


def _group_id(request: Request) -> int:
    """The path's group id; one too large to be stored names no group."""
    group_id = parse_group_id(request.path_params["group_id"])
    if group_id is None:
        raise ProtocolError("not_found", "no such group")
    return group_id


def build(chats: GroupChats) -> list[BaseRoute]:
    settings = chats.settings

    async def create(request: Request) -> Response:
        who = identity(request)
        who.require_user()
        body = await json_body(request)
        name = body.text("name", max_len=MAX_NAME_CHARS).strip()
        if not name:
            raise ProtocolError("bad_request", "name must not be blank")
        return JSON(await chats.create(who, name), status_code=201)

    async def show(request: Request) -> Response:
        user = identity(request).require_user()
        return JSON(await chats.store.view(_group_id(request), user))

    async def member_list(request: Request) -> Response:
        user = identity(request).require_user()
        return JSON({"members": await chats.store.members(_group_id(request), user)})

    async def create_invite(request: Request) -> Response:
        user = identity(request).require_user()
        body = await json_body(request)
        invite = await chats.store.create_invite(
            _group_id(request),
            user,
            ttl_s=body.opt_integer("ttl_s", min=0, max=365 * 24 * 3600),
            max_uses=body.opt_integer("max_uses", min=1, max=1_000_000),
        )
        return JSON(invite, status_code=201)

    async def revoke_invite(request: Request) -> Response:
        user = identity(request).require_user()
        code = request.path_params["code"]
        await chats.store.revoke_invite(_group_id(request), user, code)
        return JSON({})

    async def join(request: Request) -> Response:
        who = identity(request)
        who.require_user()
        body = await json_body(request)
        return JSON(await chats.join(who, body.text("code", max_len=64).strip()))

    async def remove_member(request: Request) -> Response:
        who = identity(request)
        who.require_user()
        await chats.remove(who, _group_id(request), request.path_params["user_id"])
        return JSON({})

    async def set_role(request: Request) -> Response:
        user = identity(request).require_user()
        body = await json_body(request)
        role = body.text("role", max_len=16)
        target = request.path_params["user_id"]
        await chats.store.set_role(_group_id(request), user, target, role)
        return JSON({"role": role})

    async def mute(request: Request) -> Response:
        user = identity(request).require_user()
        body = await json_body(request)
        seconds = body.integer("seconds", min=0, max=365 * 24 * 3600)
        until = await chats.store.set_mute(_group_id(request), user, request.path_params["user_id"], seconds)
        return JSON({"muted_until": until})

    async def mute_all(request: Request) -> Response:
        user = identity(request).require_user()
        body = await json_body(request)
        muted = body.raw("muted")
        if not isinstance(muted, bool):
            raise ProtocolError("bad_request", "muted must be true or false")
        await chats.store.set_mute_all(_group_id(request), user, muted)
        return JSON({"muted_all": muted})

    async def list_messages(request: Request) -> Response:
        who = identity(request)
        after = _query_int(request, "after", 0, low=0, high=2**62)
        limit = _query_int(request, "limit", 100, low=1, high=settings.page_limit)
        page = await chats.history(who, _group_id(request), after=after, limit=limit)
        return JSON(page)

    async def post_message(request: Request) -> Response:
        who = identity(request)
        body = await json_body(request)
        receipt = await chats.send(who, _group_id(request), body)
        return JSON({"seq": receipt.seq}, status_code=200 if receipt.duplicate else 201)

    async def recall(request: Request) -> Response:
        who = identity(request)
        receipt = await chats.recall(who, _group_id(request), request.path_params["seq"])
        return JSON({"seq": receipt.seq})

    async def announce(request: Request) -> Response:
        who = identity(request)
        body = await json_body(request)
        receipt = await chats.announce(who, _group_id(request), body)
        return JSON({"seq": receipt.seq}, status_code=200 if receipt.duplicate else 201)

    async def read(request: Request) -> Response:
        who = identity(request)
        who.require_user()  # a guest learns nothing about the body's validity
        body = await json_body(request)
        unread = await chats.read(who, _group_id(request), body.integer("seq", min=0))
        return JSON({"unread": unread})

    async def my_groups(request: Request) -> Response:
        user = identity(request).require_user()
        return JSON({"groups": await chats.store.my_groups(user)})

    base = "/api/groups/{group_id:int}"
    return [
        Route("/api/groups", create, methods=["POST"]),
        Route("/api/groups/join", join, methods=["POST"]),
        Route("/api/me/groups", my_groups, methods=["GET"]),
        Route(base, show, methods=["GET"]),
        Route(f"{base}/members", member_list, methods=["GET"]),
        Route(f"{base}/members/{{user_id}}", remove_member, methods=["DELETE"]),
        Route(f"{base}/members/{{user_id}}/role", set_role, methods=["POST"]),
        Route(f"{base}/members/{{user_id}}/mute", mute, methods=["POST"]),
        Route(f"{base}/mute-all", mute_all, methods=["POST"]),
        Route(f"{base}/invites", create_invite, methods=["POST"]),
        Route(f"{base}/invites/{{code}}", revoke_invite, methods=["DELETE"]),
        Route(f"{base}/messages", list_messages, methods=["GET"]),
        Route(f"{base}/messages", post_message, methods=["POST"]),
        Route(f"{base}/messages/{{seq:int}}", recall, methods=["DELETE"]),
        Route(f"{base}/announcements", announce, methods=["POST"]),
        Route(f"{base}/read", read, methods=["POST"]),
    ]
