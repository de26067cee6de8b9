"""The live-room HTTP API and media access, in process (memory broker, SQLite).

WebSocket and multi-process behaviour is covered against real processes in
test_rooms_cluster.py; here the endpoints' rules and bodies are checked directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from realtime.config import Settings
from realtime.http import JSON
from realtime.server import Core
from rooms.live import LiveRooms, RoomSettings
from tests.processes import TEST_SECRET, token

CARD = {
    "id": "p1",
    "title": "Green tea",
    "price_cents": 1200,
    "currency": "EUR",
    "image_url": None,
    "owner_id": "host",
    "sale": {"id": "s1", "remaining": 7},
}


class ShelfCatalog:
    """A catalog with one product and one sale in every room (stands in for commerce)."""

    async def product_card(self, product_id: str) -> dict[str, Any] | None:
        return CARD if product_id == "p1" else None

    async def room_sales(self, room_id: str) -> list[dict[str, Any]]:
        return [{"id": "s1", "product_id": "p1", "remaining": 7}]


@dataclass
class Api:
    core: Core
    rooms: LiveRooms
    http: httpx.AsyncClient

    async def create(self, host: str = "host", title: str = "Tea time") -> str:
        response = await self.http.post("/api/rooms", json={"title": title}, headers=auth(host))
        assert response.status_code == 201, response.text
        room_id: str = response.json()["id"]
        return room_id

    async def events(self, room_id: str) -> list[tuple[str, dict[str, Any]]]:
        page = await self.core.broker.history(f"room:{room_id}", 0, limit=100)
        return [(pub.event, pub.data) for pub in page.publications]


def auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user, user, TEST_SECRET)}"}


def media_routes(rooms: LiveRooms) -> list[Route]:
    """Endpoints that ask media access what the WHIP/WHEP relay would ask."""
    access = rooms.media_access()

    async def publish(request: Request) -> Response:
        return JSON({"user": await access.authorize_publish(request, request.path_params["room_id"])})

    async def watch(request: Request) -> Response:
        return JSON({"user": await access.authorize_watch(request, request.path_params["room_id"])})

    return [
        Route("/t/whip/{room_id}", publish, methods=["POST"]),
        Route("/t/whep/{room_id}", watch, methods=["POST"]),
    ]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}", secret=TEST_SECRET)
    core = Core(settings)
    rooms = LiveRooms(core, catalog=ShelfCatalog(), settings=RoomSettings())
    await core.migrate([rooms])
    app = core.asgi_app([rooms], extra_routes=media_routes(rooms))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://rooms.test"
        ) as http:
            yield Api(core, rooms, http)
    finally:
        await core.db.close()


async def test_create_and_read_a_room(api: Api) -> None:
    created = await api.http.post("/api/rooms", json={"title": "  Tea time "}, headers=auth("host"))
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ("title", "host_id", "status", "viewers", "likes", "pinned")} == {
        "title": "Tea time", "host_id": "host", "status": "offline", "viewers": 0, "likes": 0, "pinned": None,
    }  # fmt: skip
    assert body["sales"] == [{"id": "s1", "product_id": "p1", "remaining": 7}]
    read = await api.http.get(f"/api/rooms/{body['id']}")  # guests may read
    assert read.status_code == 200
    assert read.json() == body
    room = await api.rooms.room(body["id"])
    assert room is not None and (room.title, room.host_id, room.status) == ("Tea time", "host", "offline")


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"title": "x"}, 401, "unauthorized"),
        (auth("host"), {"title": "   "}, 400, "bad_request"),
        (auth("host"), {}, 400, "bad_request"),
        (auth("host"), {"title": "x" * 121}, 413, "too_large"),
        ({"authorization": "Bearer forged"}, {"title": "x"}, 401, "unauthorized"),
    ],
)
async def test_creating_a_room_is_refused_with_the_right_code(
    api: Api, headers: dict[str, str], body: dict[str, Any], status: int, code: str
) -> None:
    response = await api.http.post("/api/rooms", json=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("room_id", ["999", "abc", "0", "99999999999"])
async def test_unknown_rooms_are_not_found(api: Api, room_id: str) -> None:
    response = await api.http.get(f"/api/rooms/{room_id}")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert await api.rooms.room(room_id) is None


async def test_the_host_pins_and_unpins_a_product(api: Api) -> None:
    room = await api.create()
    pinned = await api.http.post(f"/api/rooms/{room}/pin", json={"product_id": "p1"}, headers=auth("host"))
    assert pinned.status_code == 200
    assert pinned.json() == {"pinned": CARD}
    assert (await api.http.get(f"/api/rooms/{room}")).json()["pinned"] == CARD

    other = await api.http.request(
        "DELETE", f"/api/rooms/{room}/pin", json={"product_id": "p9"}, headers=auth("host")
    )
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")
    unpinned = await api.http.delete(f"/api/rooms/{room}/pin", headers=auth("host"))
    assert unpinned.status_code == 200
    assert (await api.http.get(f"/api/rooms/{room}")).json()["pinned"] is None
    assert await api.events(room) == [("pin", {"product": CARD}), ("unpin", {})]


@pytest.mark.parametrize(
    ("user", "product", "status", "code"),
    [
        ("viewer", "p1", 403, "forbidden"),
        ("host", "nope", 404, "not_found"),
        ("host", "", 400, "bad_request"),
    ],
)
async def test_pinning_is_refused_with_the_right_code(
    api: Api, user: str, product: str, status: int, code: str
) -> None:
    room = await api.create()
    response = await api.http.post(f"/api/rooms/{room}/pin", json={"product_id": product}, headers=auth(user))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert await api.events(room) == []


async def test_ending_a_room_is_for_its_host_and_happens_once(api: Api) -> None:
    room = await api.create()
    refused = await api.http.post(f"/api/rooms/{room}/end", headers=auth("viewer"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    for _ in range(2):
        ended = await api.http.post(f"/api/rooms/{room}/end", headers=auth("host"))
        assert ended.status_code == 200
        assert ended.json()["status"] == "ended"
    assert await api.events(room) == [("room.end", {})]
    late_pin = await api.http.post(f"/api/rooms/{room}/pin", json={"product_id": "p1"}, headers=auth("host"))
    assert (late_pin.status_code, late_pin.json()["error"]["code"]) == (409, "ended")


async def test_stream_status_follows_the_media_relay_but_never_revives_an_ended_room(api: Api) -> None:
    room = await api.create()
    access = api.rooms.media_access()
    await access.stream_status_changed(room, "live")
    await access.stream_status_changed(room, "live")  # no change, no event
    assert (await api.http.get(f"/api/rooms/{room}")).json()["status"] == "live"
    await access.stream_status_changed(room, "offline")
    await api.http.post(f"/api/rooms/{room}/end", headers=auth("host"))
    await access.stream_status_changed(room, "live")
    assert (await api.http.get(f"/api/rooms/{room}")).json()["status"] == "ended"
    assert await api.events(room) == [
        ("stream", {"status": "live"}), ("stream", {"status": "offline"}), ("room.end", {}),
    ]  # fmt: skip


async def test_only_the_host_may_publish_media_and_banned_users_may_not_watch(api: Api) -> None:
    room = await api.create()
    assert (await api.http.post(f"/t/whip/{room}", headers=auth("host"))).json() == {"user": "host"}
    assert (await api.http.post(f"/t/whip/{room}", headers=auth("viewer"))).status_code == 403
    assert (await api.http.post(f"/t/whip/{room}")).status_code == 401
    assert (await api.http.post("/t/whip/4242", headers=auth("host"))).status_code == 404

    assert (await api.http.post(f"/t/whep/{room}")).json() == {"user": None}
    assert (await api.http.post(f"/t/whep/{room}", headers=auth("viewer"))).json() == {"user": "viewer"}
    await api.rooms.service.directory.repository.ban(room, "viewer")
    await api.rooms.state.set_ban(room, "viewer", True)
    assert (await api.http.post(f"/t/whep/{room}", headers=auth("viewer"))).status_code == 403

    await api.http.post(f"/api/rooms/{room}/end", headers=auth("host"))
    assert (await api.http.post(f"/t/whip/{room}", headers=auth("host"))).status_code == 404
    assert (await api.http.post(f"/t/whep/{room}")).status_code == 404


async def test_audience_and_room_events_for_other_domains(api: Api) -> None:
    room = await api.create()
    offset = await api.rooms.publish_room_event(room, "sale.start", {"sale": {"id": "s1"}})
    assert offset == 1
    assert await api.events(room) == [("sale.start", {"sale": {"id": "s1"}})]
    audience = await api.rooms.audience(room)
    assert (audience.peak_viewers, audience.comments, audience.likes) == (0, 0, 0)
    assert audience.viewer_ids == frozenset()
