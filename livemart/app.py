"""The composition root: the one place that wires transport and domains together."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from commerce import Catalog, Commerce, CommerceSettings
from livemart import openapi
from loadtest import cli as loadtest_cli
from realtime import cli
from realtime.config import Settings
from realtime.server import Core, Module
from rooms.groups import GroupChats, GroupSettings
from rooms.live import LiveRooms, RoomSettings
from rooms.media import MediaRelay, MediaSettings

STATIC_DIR = Path(__file__).with_name("static")

#: The page runs only its own scripts and talks only to its own origin (HTTP, WebSocket,
#: WHIP/WHEP); product images may come from anywhere over HTTPS.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
        "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def web_routes() -> list[BaseRoute]:
    """The browser client: its page at ``/`` and assets under ``/static``."""
    if not (STATIC_DIR / "index.html").exists():
        return []

    async def index(request: object) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    return [Route("/", index), Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]


def assemble(settings: Settings) -> cli.Assembly:
    core = Core(settings)
    shop_settings = CommerceSettings.from_env()
    room_settings = RoomSettings.from_env()
    group_settings = GroupSettings.from_env()
    catalog = Catalog(core, settings=shop_settings)
    rooms = LiveRooms(core, catalog=catalog, settings=room_settings)
    groups = GroupChats(core, rooms=rooms, settings=group_settings)
    shop = Commerce(core, catalog=catalog, rooms=rooms, groups=groups, settings=shop_settings)
    media = MediaRelay(rooms.media_access(), MediaSettings.from_env())
    rooms.on_room_end(media.end_room)
    modules: Sequence[Module] = [rooms, groups, shop, media]
    spec = openapi.document(
        rooms=room_settings, groups=group_settings, shop=shop_settings, max_body_bytes=settings.max_body_bytes
    )
    app = core.asgi_app(modules, extra_routes=[openapi.route(spec), *web_routes()])
    return cli.Assembly(core=core, modules=modules, app=app)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, assemble=assemble, register=[loadtest_cli.register])


if __name__ == "__main__":
    sys.exit(main())
