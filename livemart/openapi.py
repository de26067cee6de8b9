"""The OpenAPI 3.1 description of livemart's HTTP API, written out as data.

It is served at ``GET /openapi.json`` so client generators and fuzzers (the test suite
runs schemathesis against a real server with it) read the same document. Bounds come
from the settings the handlers enforce, so a deployment that raises a limit publishes
the raised limit. ``tests/test_openapi.py`` compares the paths and methods here with
the app's routes, so neither can change without the other.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from commerce import CommerceSettings
from commerce.entities import SOURCES
from commerce.inputs import MAX_ID_LENGTH, MAX_KEY_LENGTH
from commerce.routes import MAX_ORDERS
from realtime.http import JSON
from rooms.groups import GroupSettings
from rooms.groups.routes import MAX_NAME_CHARS
from rooms.groups.rules import MAX_CLIENT_ID_CHARS, SEND_KINDS
from rooms.live import RoomSettings

Schema = dict[str, Any]

#: Security requirements: a signed-in user, a guest or a user, the backend's key.
USER: list[Schema] = [{"bearer": []}]
ANYONE: list[Schema] = [{}, {"bearer": []}]
PUBLIC: list[Schema] = []
BACKEND: list[Schema] = [{"apiKey": []}]

ERROR_STATUSES = {
    "400": "Malformed or invalid input (`bad_request`).",
    "401": "No token where one is needed, or a forged, expired or malformed one (`unauthorized`).",
    "403": "Signed in but not allowed: `forbidden`, `not_member`, `muted`, `banned`.",
    "404": "No such room, product, sale, reservation, group, member, invite or session.",
    "406": "WHIP/WHEP: the offer's media cannot be served (`not_acceptable`).",
    "409": "A state conflict: `conflict`, `sold_out`, `limit_exceeded`, `not_started`, `ended`, …",
    "410": "Too late: the hold or the recall window `expired`.",
    "413": "A field or the body is over its limit (`too_large`).",
    "415": "WHIP/WHEP: the body is not `application/sdp`.",
    "501": "WHIP/WHEP: trickle ICE and ICE restarts are not implemented.",
    "503": "Redis or the database is unreachable, or the server is draining; nothing was done.",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *required: str) -> Schema:
    """An object schema; extra properties stay allowed, as the handlers ignore them."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def text(max_len: int, **extra: Any) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_len, **extra}


def integer(low: int | None = None, high: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def identifier(max_len: int = MAX_ID_LENGTH) -> Schema:
    """Ids may be sent as strings or numbers; the server keeps them as strings."""
    return {"anyOf": [text(max_len, pattern=r"^[^\x00-\x1f\x7f]+$"), integer(0, 2**53 - 1)]}


def body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def reply(description: str, schema: Schema, *, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def errors(*statuses: int) -> dict[str, Schema]:
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in statuses}


def path_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    security: list[Schema],
    responses: dict[str, Schema],
    request: Schema | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    op: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if request is not None:
        op["requestBody"] = request
    if parameters:
        op["parameters"] = parameters
    return op


ROOM_ID = path_param("room_id", {"type": "string", "pattern": r"^[0-9]{1,18}$"}, "A live room's id.")
ROOM_ID_ANY = path_param("room_id", {"type": "string", "minLength": 1}, "A live room's id.")
GROUP_ID = path_param("group_id", integer(1, 10**18 - 1), "A group's id.")
MEMBER_ID = path_param("user_id", {"type": "string", "minLength": 1, "maxLength": 128}, "A member's user id.")
PRODUCT_ID = path_param("product_id", {"type": "string", "minLength": 1}, "A product's id.")
SALE_ID = path_param("sale_id", {"type": "string", "minLength": 1}, "A flash sale's id.")
RESERVATION_ID = path_param("reservation_id", {"type": "string", "minLength": 1}, "A reservation's id.")
SESSION_ID = path_param("session_id", {"type": "string", "minLength": 1}, "The id in the session's Location.")
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the same key from the same user answers with the first "
        "reservation (header `Idempotent-Replayed: true`). Keys are scoped per user."
    ),
    # Header values are Latin-1 on the wire; the server wants printable characters.
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": r"^[!-~]+$"},
}


def schemas() -> dict[str, Schema]:
    """Response and shared request schemas (``components.schemas``)."""
    timestamp: Schema = {"type": "string", "description": "ISO 8601, UTC"}
    product = obj(
        {
            "id": {"type": "string"},
            "owner_id": {"type": "string"},
            "title": {"type": "string"},
            "price_cents": {"type": "integer"},
            "currency": {"type": "string"},
            "image_url": nullable({"type": "string"}),
            "created_at": timestamp,
        },
        "id",
        "owner_id",
        "title",
        "price_cents",
        "currency",
    )
    sale = obj(
        {
            "id": {"type": "string"},
            "product_id": {"type": "string"},
            "product": ref("Product"),
            "owner_id": {"type": "string"},
            "stock": {"type": "integer"},
            "remaining": nullable({"type": "integer"}),
            "price_cents": {"type": "integer"},
            "currency": {"type": "string"},
            "per_user_limit": {"type": "integer"},
            "hold_seconds": {"type": "integer"},
            "room_id": nullable({"type": "string"}),
            "group_id": nullable({"type": "string"}),
            "starts_at": nullable(timestamp),
            "ends_at": nullable(timestamp),
            "status": {"enum": ["scheduled", "active", "sold_out", "ended"]},
        },
        "id",
        "product_id",
        "stock",
        "remaining",
        "status",
    )
    group = obj(
        {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "owner_id": {"type": "string"},
            "members": {"type": "integer"},
            "last_seq": {"type": "integer"},
            "muted_all": {"type": "boolean"},
            "role": {"enum": ["owner", "admin", "member"]},
            "read_seq": {"type": "integer"},
            "unread": {"type": "integer"},
        },
        "id",
        "name",
        "owner_id",
        "role",
        "unread",
    )
    return {
        "Error": obj(
            {"error": obj({"code": {"type": "string"}, "message": {"type": "string"}}, "code", "message")},
            "error",
        ),
        "RoomRecord": obj(
            {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "host_id": {"type": "string"},
                "status": {"enum": ["offline", "live", "ended"]},
                "created_at": {"type": "string"},
            },
            "id",
            "title",
            "host_id",
            "status",
        ),
        "Room": {
            "allOf": [
                ref("RoomRecord"),
                obj(
                    {
                        "viewers": {"type": "integer"},
                        "likes": {"type": "integer"},
                        "pinned": nullable(ref("ProductCard")),
                        "sales": {"type": "array", "items": ref("Sale")},
                    },
                    "viewers",
                    "pinned",
                    "sales",
                ),
            ]
        },
        "Product": product,
        "ProductCard": {
            "allOf": [product, obj({"sale": nullable({"type": "object"})})],
            "description": "A product with its open flash sale, if any.",
        },
        "Sale": sale,
        "Reservation": obj(
            {
                "id": {"type": "string"},
                "sale_id": {"type": "string"},
                "quantity": {"type": "integer", "minimum": 1},
                "status": {"enum": ["held", "confirmed", "released", "expired", "void"]},
                "source": {"enum": list(SOURCES)},
                "expires_at": timestamp,
                "created_at": timestamp,
            },
            "id",
            "sale_id",
            "quantity",
            "status",
            "expires_at",
        ),
        "Order": obj(
            {
                "id": {"type": "string"},
                "reservation_id": {"type": "string"},
                "sale_id": {"type": "string"},
                "user_id": {"type": "string"},
                "product_id": {"type": "string"},
                "product_title": {"type": "string"},
                "quantity": {"type": "integer"},
                "price_cents": {"type": "integer"},
                "amount_cents": {"type": "integer"},
                "currency": {"type": "string"},
                "source": {"enum": list(SOURCES)},
                "room_id": nullable({"type": "string"}),
                "created_at": timestamp,
            },
            "id",
            "reservation_id",
            "sale_id",
            "quantity",
            "amount_cents",
            "currency",
        ),
        "Group": group,
        "Member": obj(
            {
                "user_id": {"type": "string"},
                "name": {"type": "string"},
                "role": {"enum": ["owner", "admin", "member"]},
                "muted": {"type": "boolean"},
            },
            "user_id",
            "role",
        ),
        "Invite": obj(
            {
                "code": {"type": "string"},
                "group_id": {"type": "integer"},
                "expires_at": nullable({"type": "number", "description": "seconds since the epoch"}),
                "max_uses": nullable({"type": "integer"}),
            },
            "code",
            "group_id",
        ),
        "Message": obj(
            {
                "seq": {"type": "integer"},
                "user_id": {"type": "string"},
                "name": {"type": "string"},
                "text": {"type": "string"},
                "kind": {"enum": [*SEND_KINDS, "announcement", "recall"]},
                "ref": nullable({"type": "object"}),
                "ts": {"type": "number", "description": "seconds since the epoch"},
                "recalled": {"type": "boolean"},
            },
            "seq",
            "user_id",
            "text",
            "kind",
            "ts",
        ),
        "Seq": obj({"seq": {"type": "integer", "minimum": 1}}, "seq"),
        "RoomStats": obj(
            {
                "room_id": {"type": "string"},
                "peak_viewers": {"type": "integer"},
                "unique_viewers": {"type": "integer"},
                "comments": {"type": "integer"},
                "likes": {"type": "integer"},
                "holds": {"type": "integer"},
                "orders": {"type": "integer"},
                "units": {"type": "integer"},
                "gmv_cents": nullable({"type": "integer"}),
                "currency": nullable({"type": "string"}),
                "gmv_by_currency": {"type": "object", "additionalProperties": {"type": "integer"}},
                "buyers": {"type": "integer"},
                "conversion": obj(
                    {
                        "all": nullable({"type": "number"}),
                        "interacting": nullable({"type": "number"}),
                        "silent": nullable({"type": "number"}),
                    },
                    "all",
                    "interacting",
                    "silent",
                ),
                "orders_by_source": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "room_id",
            "peak_viewers",
            "unique_viewers",
            "orders",
            "units",
            "conversion",
            "orders_by_source",
        ),
    }


def room_paths(rooms: RoomSettings) -> dict[str, Schema]:
    tag = "live rooms"
    return {
        "/api/rooms": {
            "post": operation(
                "createRoom",
                "Create a live room; the caller is its host.",
                tag=tag,
                security=USER,
                request=body(obj({"title": text(rooms.title_max_len)}, "title")),
                responses={"201": reply("The new room.", ref("Room")), **errors(400, 401, 413, 503)},
            )
        },
        "/api/rooms/{room_id}": {
            "get": operation(
                "getRoom",
                "A room's public record with live viewers, likes, pinned product and sales.",
                tag=tag,
                security=ANYONE,
                parameters=[ROOM_ID_ANY],
                responses={"200": reply("The room.", ref("Room")), **errors(401, 404, 503)},
            )
        },
        "/api/rooms/{room_id}/end": {
            "post": operation(
                "endRoom",
                "End the room for good; subscribers get `room.end`. Host only; repeating is harmless.",
                tag=tag,
                security=USER,
                parameters=[ROOM_ID_ANY],
                responses={
                    "200": reply("The ended room.", ref("RoomRecord")),
                    **errors(401, 403, 404, 503),
                },
            )
        },
        "/api/rooms/{room_id}/pin": {
            "post": operation(
                "pinProduct",
                "Pin a product in the room (host only); subscribers get `pin`.",
                tag=tag,
                security=USER,
                parameters=[ROOM_ID_ANY],
                request=body(obj({"product_id": identifier(64)}, "product_id")),
                responses={
                    "200": reply("The pinned product.", obj({"pinned": ref("ProductCard")}, "pinned")),
                    **errors(400, 401, 403, 404, 409, 413, 503),
                },
            ),
            "delete": operation(
                "unpinProduct",
                "Take the pin down (host only); with `product_id`, only if that product is pinned.",
                tag=tag,
                security=USER,
                parameters=[ROOM_ID_ANY],
                request=body(obj({"product_id": identifier(64)}), required=False),
                responses={"200": reply("Unpinned.", obj({})), **errors(400, 401, 403, 404, 413, 503)},
            ),
        },
        "/api/rooms/{room_id}/stats": {
            "get": operation(
                "roomStats",
                "The host's figures: viewers, comments, likes, holds, orders, units, GMV, conversion.",
                tag=tag,
                security=USER,
                parameters=[ROOM_ID_ANY],
                responses={"200": reply("The figures.", ref("RoomStats")), **errors(401, 403, 404, 503)},
            )
        },
    }


def commerce_paths(shop: CommerceSettings) -> dict[str, Schema]:
    tag = "flash sales"
    timestamp: Schema = {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 64, "description": "ISO 8601 with a time zone"},
            {"type": "number", "minimum": 0, "exclusiveMaximum": 10**11, "description": "epoch seconds"},
        ]
    }
    product_body = obj(
        {
            "title": text(200),
            "price_cents": integer(0, shop.max_price_cents),
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
            "image_url": nullable({"type": "string", "maxLength": 2000, "pattern": "^(https?://|/)"}),
        },
        "title",
        "price_cents",
        "currency",
    )
    sale_body = obj(
        {
            "product_id": identifier(),
            "stock": integer(1, shop.max_stock),
            "price_cents": nullable(integer(0, shop.max_price_cents)),
            "per_user_limit": nullable(integer(1, shop.max_per_user_limit)),
            "hold_seconds": nullable(integer(1, shop.max_hold_seconds)),
            "room_id": nullable(identifier()),
            "group_id": nullable(identifier()),
            "starts_at": nullable(timestamp),
            "ends_at": nullable(timestamp),
        },
        "product_id",
        "stock",
    )
    reserve_body = obj(
        {
            "quantity": nullable(integer(1, shop.max_per_user_limit)),
            "source": nullable({"enum": list(SOURCES)}),
        }
    )
    replayed = {
        "Idempotent-Replayed": {
            "description": "`true` when this answers an earlier request with the same key.",
            "schema": {"type": "string"},
        }
    }
    return {
        "/api/products": {
            "post": operation(
                "createProduct",
                "Create a product; the caller is its owner.",
                tag=tag,
                security=USER,
                request=body(product_body),
                responses={"201": reply("The product.", ref("Product")), **errors(400, 401, 413, 503)},
            )
        },
        "/api/products/{product_id}": {
            "get": operation(
                "getProduct",
                "A product with its open sale.",
                tag=tag,
                security=PUBLIC,
                parameters=[PRODUCT_ID],
                responses={"200": reply("The product.", ref("ProductCard")), **errors(404, 503)},
            )
        },
        "/api/flash-sales": {
            "post": operation(
                "createSale",
                "Open a flash sale of one's own product; with `group_id`, for that group's members only.",
                tag=tag,
                security=USER,
                request=body(sale_body),
                responses={
                    "201": reply("The sale.", ref("Sale")),
                    **errors(400, 401, 403, 404, 409, 413, 503),
                },
            )
        },
        "/api/flash-sales/{sale_id}": {
            "get": operation(
                "getSale",
                "A sale with its live `remaining`.",
                tag=tag,
                security=PUBLIC,
                parameters=[SALE_ID],
                responses={"200": reply("The sale.", ref("Sale")), **errors(404, 503)},
            )
        },
        "/api/flash-sales/{sale_id}/reservations": {
            "post": operation(
                "reserve",
                "Hold units of a sale until `expires_at`; confirm to buy, delete to release.",
                tag=tag,
                security=USER,
                parameters=[SALE_ID, IDEMPOTENCY_KEY],
                request=body(reserve_body, required=False),
                responses={
                    "201": reply(
                        "The hold (or the earlier one for this key).", ref("Reservation"), headers=replayed
                    ),
                    **errors(400, 401, 403, 404, 409, 413, 503),
                },
            )
        },
        "/api/flash-sales/{sale_id}/reconcile": {
            "post": operation(
                "reconcileSale",
                "Rebuild the sale's stock ledger from SQL (operators, server-to-server).",
                tag=tag,
                security=BACKEND,
                parameters=[SALE_ID],
                responses={
                    "200": reply(
                        "Whether the ledger was rebuilt, and its level.",
                        obj(
                            {"sale_id": {"type": "string"}, "rebuilt": {"type": "boolean"}},
                            "sale_id",
                            "rebuilt",
                        ),
                    ),
                    **errors(401, 404, 503),
                },
            )
        },
        "/api/reservations/{reservation_id}/confirm": {
            "post": operation(
                "confirmReservation",
                "Pay for a hold (a stand-in for payment): it becomes an order.",
                tag=tag,
                security=USER,
                parameters=[RESERVATION_ID],
                responses={
                    "200": reply("The order.", obj({"order": ref("Order")}, "order")),
                    **errors(401, 403, 404, 409, 410, 503),
                },
            )
        },
        "/api/reservations/{reservation_id}": {
            "delete": operation(
                "releaseReservation",
                "Give a hold back; its units return to the sale.",
                tag=tag,
                security=USER,
                parameters=[RESERVATION_ID],
                responses={
                    "200": reply("The released reservation.", ref("Reservation")),
                    **errors(401, 403, 404, 409, 410, 503),
                },
            )
        },
        "/api/orders": {
            "get": operation(
                "myOrders",
                "The caller's orders, newest first.",
                tag=tag,
                security=USER,
                parameters=[query_param("limit", integer(1, MAX_ORDERS), "How many (default 50).")],
                responses={
                    "200": reply(
                        "Orders.", obj({"orders": {"type": "array", "items": ref("Order")}}, "orders")
                    ),
                    **errors(400, 401, 503),
                },
            )
        },
    }


def group_paths(groups: GroupSettings) -> dict[str, Schema]:
    tag = "groups"
    base = "/api/groups/{group_id}"
    year_s = 365 * 24 * 3600
    member_errors = errors(401, 403, 404, 503)
    send_body = obj(
        {
            "text": {"type": "string", "maxLength": groups.max_text_chars},
            "client_msg_id": text(MAX_CLIENT_ID_CHARS),
            "kind": {"enum": list(SEND_KINDS)},
            "ref": {
                "description": "For `room_card` / `sale_card`: the id, or `{room_id}` / `{sale_id}`.",
                "anyOf": [identifier(64), {"type": "object"}],
            },
        },
        "client_msg_id",
    )
    created_or_replayed = {
        "201": reply("Stored durably; `seq` is its place in the group.", ref("Seq")),
        "200": reply("The same `client_msg_id` again: the first message's `seq`.", ref("Seq")),
    }
    return {
        "/api/groups": {
            "post": operation(
                "createGroup",
                "Create a group; the caller is its owner.",
                tag=tag,
                security=USER,
                request=body(obj({"name": text(MAX_NAME_CHARS)}, "name")),
                responses={"201": reply("The group.", ref("Group")), **errors(400, 401, 413, 503)},
            )
        },
        "/api/groups/join": {
            "post": operation(
                "joinGroup",
                "Join a group with an invite code.",
                tag=tag,
                security=USER,
                request=body(obj({"code": text(64)}, "code")),
                responses={
                    "200": reply("The group.", ref("Group")),
                    **errors(400, 401, 403, 404, 409, 410, 413, 503),
                },
            )
        },
        "/api/me/groups": {
            "get": operation(
                "myGroups",
                "The caller's groups with unread counts.",
                tag=tag,
                security=USER,
                responses={
                    "200": reply(
                        "Groups.", obj({"groups": {"type": "array", "items": ref("Group")}}, "groups")
                    ),
                    **errors(401, 503),
                },
            )
        },
        base: {
            "get": operation(
                "getGroup",
                "A group as one member sees it (role, read cursor, unread).",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                responses={"200": reply("The group.", ref("Group")), **member_errors},
            )
        },
        f"{base}/members": {
            "get": operation(
                "listMembers",
                "The member list (members only).",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                responses={
                    "200": reply(
                        "Members.", obj({"members": {"type": "array", "items": ref("Member")}}, "members")
                    ),
                    **member_errors,
                },
            )
        },
        f"{base}/members/{{user_id}}": {
            "delete": operation(
                "removeMember",
                "Kick a member (owner/admin over a lower role) or leave (oneself); live subscriptions end.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID, MEMBER_ID],
                responses={"200": reply("Removed.", obj({})), **member_errors},
            )
        },
        f"{base}/members/{{user_id}}/role": {
            "post": operation(
                "setRole",
                "Make a member an admin or a plain member (owner only).",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID, MEMBER_ID],
                request=body(obj({"role": {"enum": ["admin", "member"]}}, "role")),
                responses={
                    "200": reply("The new role.", obj({"role": {"type": "string"}}, "role")),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            )
        },
        f"{base}/members/{{user_id}}/mute": {
            "post": operation(
                "muteMember",
                "Mute a member for `seconds` (0 unmutes); owner/admin over a lower role.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID, MEMBER_ID],
                request=body(obj({"seconds": integer(0, year_s)}, "seconds")),
                responses={
                    "200": reply(
                        "Until when.", obj({"muted_until": nullable({"type": "number"})}, "muted_until")
                    ),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            )
        },
        f"{base}/mute-all": {
            "post": operation(
                "muteAll",
                "Only the owner and admins may post while `muted` is true.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                request=body(obj({"muted": {"type": "boolean"}}, "muted")),
                responses={
                    "200": reply("The setting.", obj({"muted_all": {"type": "boolean"}}, "muted_all")),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            )
        },
        f"{base}/invites": {
            "post": operation(
                "createInvite",
                "A new invite code (owner/admin).",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                request=body(
                    obj({"ttl_s": nullable(integer(0, year_s)), "max_uses": nullable(integer(1, 1_000_000))}),
                    required=False,
                ),
                responses={
                    "201": reply("The invite.", ref("Invite")),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            )
        },
        f"{base}/invites/{{code}}": {
            "delete": operation(
                "revokeInvite",
                "Revoke an invite code (owner/admin).",
                tag=tag,
                security=USER,
                parameters=[
                    GROUP_ID,
                    path_param("code", {"type": "string", "minLength": 1}, "The invite code."),
                ],
                responses={"200": reply("Revoked.", obj({})), **member_errors},
            )
        },
        f"{base}/messages": {
            "get": operation(
                "listMessages",
                "Durable history after `after`, ascending `seq` (members only).",
                tag=tag,
                security=USER,
                parameters=[
                    GROUP_ID,
                    query_param("after", integer(0, 2**62), "Return messages with a larger seq (default 0)."),
                    query_param("limit", integer(1, groups.page_limit), "Page size (default 100)."),
                ],
                responses={
                    "200": reply(
                        "A page; `more` says whether later messages exist.",
                        obj(
                            {
                                "messages": {"type": "array", "items": ref("Message")},
                                "last_seq": {"type": "integer"},
                                "more": {"type": "boolean"},
                            },
                            "messages",
                            "last_seq",
                            "more",
                        ),
                    ),
                    **errors(400, 401, 403, 404, 503),
                },
            ),
            "post": operation(
                "sendMessage",
                "Send a message (same as WS `group.send`); answered once it is durable.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                request=body(send_body),
                responses={**created_or_replayed, **errors(400, 401, 403, 404, 413, 503)},
            ),
        },
        f"{base}/messages/{{seq}}": {
            "delete": operation(
                "recallMessage",
                "Recall a message: its text is erased and a `recall` event gets a new seq.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID, path_param("seq", integer(0, 2**53 - 1), "The message's seq.")],
                responses={
                    "200": reply("The recall's seq.", ref("Seq")),
                    **errors(400, 401, 403, 404, 410, 503),
                },
            )
        },
        f"{base}/announcements": {
            "post": operation(
                "announce",
                "Post an announcement (owner/admin).",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                request=body(
                    obj(
                        {
                            "text": text(groups.max_text_chars),
                            "client_msg_id": nullable(text(MAX_CLIENT_ID_CHARS)),
                        },
                        "text",
                    )
                ),
                responses={**created_or_replayed, **errors(400, 401, 403, 404, 413, 503)},
            )
        },
        f"{base}/read": {
            "post": operation(
                "markRead",
                "Move the caller's read cursor to `seq`.",
                tag=tag,
                security=USER,
                parameters=[GROUP_ID],
                request=body(obj({"seq": integer(0, 2**53 - 1)}, "seq")),
                responses={
                    "200": reply(
                        "Unread count after the move.", obj({"unread": {"type": "integer"}}, "unread")
                    ),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            )
        },
    }


def media_paths() -> dict[str, Schema]:
    tag = "media"
    offer = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
    created = {
        "description": "The SDP answer; `Location` is the session's URL (DELETE it to end).",
        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
        "content": {"application/sdp": {"schema": {"type": "string"}}},
    }
    options = {"204": {"description": "`Accept-Post: application/sdp`."}}
    offer_errors = errors(400, 401, 403, 404, 406, 409, 413, 415, 503)
    paths: dict[str, Schema] = {}
    for kind, security, what in (
        ("whip", USER, "Send the room's stream (host only)"),
        ("whep", ANYONE, "Watch"),
    ):
        paths[f"/{kind}/{{room_id}}"] = {
            "post": operation(
                f"{kind}Offer",
                f"{what}: WebRTC {kind.upper()}, an SDP offer in, an answer out.",
                tag=tag,
                security=security,
                parameters=[ROOM_ID_ANY],
                request=offer,
                responses={"201": created, **offer_errors},
            ),
            "options": operation(
                f"{kind}Options",
                "What the endpoint accepts.",
                tag=tag,
                security=PUBLIC,
                parameters=[ROOM_ID_ANY],
                responses=options,
            ),
        }
        paths[f"/{kind}/{{room_id}}/{{session_id}}"] = {
            "delete": operation(
                f"{kind}End",
                "End the session (its owner).",
                tag=tag,
                security=security,
                parameters=[ROOM_ID_ANY, SESSION_ID],
                responses={"200": {"description": "Ended."}, **errors(401, 403, 404, 503)},
            ),
            "patch": operation(
                f"{kind}Patch",
                "Trickle ICE / ICE restart: not implemented (RFC 9725 allows 501).",
                tag=tag,
                security=PUBLIC,
                parameters=[ROOM_ID_ANY, SESSION_ID],
                responses=errors(404, 501),
            ),
        }
    return paths


def core_paths() -> dict[str, Schema]:
    tag = "operations"
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness.",
                tag=tag,
                security=PUBLIC,
                responses={
                    "200": reply("Alive.", obj({"status": {"const": "ok"}, "pid": {"type": "integer"}}))
                },
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: the database and the broker answer, and the process is not draining.",
                tag=tag,
                security=PUBLIC,
                responses={
                    "200": reply("Ready.", obj({"ready": {"type": "boolean"}, "checks": {"type": "object"}})),
                    "503": reply(
                        "Not ready; `checks` says what failed.", obj({"ready": {"type": "boolean"}})
                    ),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics of this process.",
                tag=tag,
                security=PUBLIC,
                responses={
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document.",
                tag=tag,
                security=PUBLIC,
                responses={"200": reply("OpenAPI 3.1.", {"type": "object"})},
            )
        },
        "/api/publish": {
            "post": operation(
                "publish",
                "Publish an event into a channel from a backend (`LIVEMART_API_KEY`; 404 when unset).",
                tag=tag,
                security=BACKEND,
                request=body(
                    {
                        **obj(
                            {
                                "channel": text(200, description="`room:<id>` or `group:<id>` (or `ch`)."),
                                "ch": text(200),
                                "event": text(64, pattern="^[^$]"),
                                "data": {"type": "object"},
                            },
                            "event",
                        ),
                        "anyOf": [{"required": ["channel"]}, {"required": ["ch"]}],
                    }
                ),
                responses={
                    "200": reply(
                        "The channel position of the publication.",
                        obj({"off": {"type": "integer"}, "epoch": {"type": "string"}}, "off", "epoch"),
                    ),
                    **errors(400, 401, 404, 413, 503),
                },
            )
        },
    }


def document(
    *,
    rooms: RoomSettings,
    groups: GroupSettings,
    shop: CommerceSettings,
    max_body_bytes: int,
) -> Schema:
    """The whole API as an OpenAPI 3.1 document (a plain dict, ready for JSON)."""
    error = {"description": "", "content": {"application/json": {"schema": ref("Error")}}}
    responses = {f"E{status}": {**error, "description": text_} for status, text_ in ERROR_STATUSES.items()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livemart",
            "version": "1",
            "description": (
                "HTTP API of livemart: live rooms, flash sales, group chats and WebRTC media. "
                'Errors are always `{"error": {"code", "message"}}`. JSON bodies are at most '
                f"{max_body_bytes} bytes. The WebSocket protocol at `/ws` is in docs/protocol.md."
            ),
        },
        "paths": {
            **core_paths(),
            **room_paths(rooms),
            **commerce_paths(shop),
            **group_paths(groups),
            **media_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256 access token (`sub`, `name`, `exp`) from `livemart token`.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": schemas(),
            "responses": responses,
        },
    }


def route(spec: Schema) -> Route:
    """``GET /openapi.json`` serving ``spec``, rendered once."""
    rendered = JSON(spec).body

    async def openapi(request: Request) -> Response:
        return Response(rendered, media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"])
