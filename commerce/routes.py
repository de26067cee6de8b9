"""HTTP endpoints of products, flash sales, reservations, orders and room stats."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from realtime.errors import ProtocolError
from realtime.http import JSON, identity, json_body, require_api_key, user_id

from . import inputs, stats
from .entities import now_ms

if TYPE_CHECKING:
    from .module import Commerce

#: Orders returned by GET /api/orders at most (``?limit=``).
MAX_ORDERS = 200


def build(shop: Commerce) -> list[BaseRoute]:
    settings = shop.settings

    async def create_product(request: Request) -> Response:
        owner = user_id(request)
        draft = inputs.product_draft(await json_body(request), settings)
        product = await shop.desk.create_product(owner, draft)
        return JSON(product.as_dict(), status_code=201)

    async def get_product(request: Request) -> Response:
        product_id = request.path_params["product_id"]
        card = await shop.catalog.product_card(product_id)
        if card is None:
            raise ProtocolError("not_found", "no such product")
        return JSON(card)

    async def create_sale(request: Request) -> Response:
        owner = user_id(request)
        draft = inputs.sale_draft(await json_body(request), settings, now_ms())
        sale = await shop.desk.create_sale(owner, draft)
        shop.sweeper.track(await shop.catalog.sale(sale["id"]))
        return JSON(sale, status_code=201)

    async def get_sale(request: Request) -> Response:
        record = await shop.catalog.store.sale(request.path_params["sale_id"])
        if record is None:
            raise ProtocolError("not_found", "no such flash sale")
        return JSON((await shop.catalog.views([record]))[0])

    async def reserve(request: Request) -> Response:
        caller = identity(request)
        args = await json_body(request)
        wanted = inputs.reserve_request(
            args, key=request.headers.get("idempotency-key"), default_source="api", settings=settings
        )
        reply = await shop.checkout.reserve(caller, request.path_params["sale_id"], wanted)
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        return JSON(reply.reservation.as_dict(), status_code=201, headers=headers)

    async def reconcile(request: Request) -> Response:
        require_api_key(request)
        sale_id = request.path_params["sale_id"]
        level = await shop.reconciler.rebuild(sale_id, reason="command")
        body = {"sale_id": sale_id, "rebuilt": level is not None}
        if level is not None:
            body.update(remaining=level.remaining, generation=level.generation, holds=level.holds)
        return JSON(body)

    async def confirm(request: Request) -> Response:
        order = await shop.checkout.confirm(identity(request), request.path_params["reservation_id"])
        return JSON({"order": order.as_dict()})

    async def release(request: Request) -> Response:
        res = await shop.checkout.release(identity(request), request.path_params["reservation_id"])
        return JSON(res.as_dict())

    async def my_orders(request: Request) -> Response:
        caller = user_id(request)
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ORDERS:
            raise ProtocolError("bad_request", f"limit must be an integer in [1, {MAX_ORDERS}]")
        found = await shop.reservations.orders_of(caller, limit=int(raw))
        return JSON({"orders": [o.as_dict() for o in found]})

    async def room_stats(request: Request) -> Response:
        caller = user_id(request)
        room_id = request.path_params["room_id"]
        room = await shop.rooms.room(room_id)
        if room is None:
            raise ProtocolError("not_found", "no such room")
        if room.host_id != caller:
            raise ProtocolError("forbidden", "only the room's host sees its figures")
        audience = await shop.rooms.audience(room_id)
        holds, lines = await stats.room_activity(shop.db, room_id)
        return JSON({"room_id": room_id, **stats.figures(audience, holds, lines)})

    return [
        Route("/api/products", create_product, methods=["POST"]),
        Route("/api/products/{product_id}", get_product, methods=["GET"]),
        Route("/api/flash-sales", create_sale, methods=["POST"]),
        Route("/api/flash-sales/{sale_id}", get_sale, methods=["GET"]),
        Route("/api/flash-sales/{sale_id}/reservations", reserve, methods=["POST"]),
        Route("/api/flash-sales/{sale_id}/reconcile", reconcile, methods=["POST"]),
        Route("/api/reservations/{reservation_id}/confirm", confirm, methods=["POST"]),
        Route("/api/reservations/{reservation_id}", release, methods=["DELETE"]),
        Route("/api/orders", my_orders, methods=["GET"]),
        Route("/api/rooms/{room_id}/stats", room_stats, methods=["GET"]),
    ]
