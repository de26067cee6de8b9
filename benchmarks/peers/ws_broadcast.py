"""The naive floor: a `websockets` server that relays a publisher's messages to a room.

A subscriber connects to `/sub/<room>` (it gets "joined" once it is in); a publisher
connects to `/pub/<room>` and every message it sends goes to the room's subscribers with
`websockets.broadcast` (one write per subscriber, no batching, no queue per client).
`GET /healthz` answers 200.

    python ws_broadcast.py --port 9002

Keepalive pings are off, as in livemart: the benchmark's subscribers only read.
"""

from __future__ import annotations

import argparse
import asyncio
import http

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

rooms: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    kind, _, room = ws.request.path.strip("/").partition("/") if ws.request else ("", "", "")
    if kind == "sub":
        members = rooms.setdefault(room, set())
        members.add(ws)
        try:
            await ws.send("joined")
            await ws.wait_closed()
        finally:
            members.discard(ws)
    elif kind == "pub":
        async for message in ws:
            websockets.broadcast(rooms.get(room, ()), message)
    else:
        await ws.close(1008, "use /sub/<room> or /pub/<room>")


def health(ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return ws.respond(http.HTTPStatus.OK, "ok\n")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def serve_forever() -> None:
        async with serve(handler, args.host, args.port, process_request=health, ping_interval=None):
            await asyncio.Future()

    uvloop.run(serve_forever())


if __name__ == "__main__":
    main()
