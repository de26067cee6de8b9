"""HTTP endpoints of live rooms (the stats endpoint belongs to commerce)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from realtime.http import JSON, identity, json_body, user_id

from .ops import product_id_of, room_id_of
from .service import RoomService


class RoomRoutes:
    def __init__(self, service: RoomService, *, title_max_len: int) -> None:
        self._service = service
        self._title_max_len = title_max_len

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/rooms", self.create, methods=["POST"]),
            Route("/api/rooms/{room_id}", self.read, methods=["GET"]),
            Route("/api/rooms/{room_id}/end", self.end, methods=["POST"]),
            Route("/api/rooms/{room_id}/pin", self.pin, methods=["POST"]),
            Route("/api/rooms/{room_id}/pin", self.unpin, methods=["DELETE"]),
        ]

    async def create(self, request: Request) -> Response:
        host_id = user_id(request)
        body = await json_body(request)
        room = await self._service.create(host_id, body.text("title", max_len=self._title_max_len))
        return JSON(await self._service.describe(room.id), status_code=201)

    async def read(self, request: Request) -> Response:
        identity(request)  # a malformed or expired token is refused even here
        return JSON(await self._service.describe(room_id_of(request.path_params["room_id"])))

    async def end(self, request: Request) -> Response:
        caller = user_id(request)
        room = await self._service.end(caller, room_id_of(request.path_params["room_id"]))
        return JSON(room.as_dict())

    async def pin(self, request: Request) -> Response:
        caller = user_id(request)
        room_id = room_id_of(request.path_params["room_id"])
        body = await json_body(request)
        card = await self._service.pin(caller, room_id, product_id_of(body.raw("product_id")))
        return JSON({"pinned": card})

    async def unpin(self, request: Request) -> Response:
        caller = user_id(request)
        room_id = room_id_of(request.path_params["room_id"])
        body = await json_body(request)
        raw = body.raw("product_id")
        await self._service.unpin(caller, room_id, None if raw is None else product_id_of(raw))
        return JSON({})
