"""python-socketio peer: AsyncServer with its AsyncRedisManager, served by uvicorn.

Subscribers connect with the WebSocket transport and emit `join` with a room name (the
ack says they are in). `POST /publish {"room", "event", "data"}` emits into the room
through the Redis manager, so every server sharing the Redis channel delivers it, as in
a python-socketio cluster.

    python socketio_server.py --port 9001 --redis redis://127.0.0.1:6379/0 --channel bench-1

Engine.IO pings every 300 s and uvicorn's WebSocket pings are off: the benchmark's
subscribers only read (livemart does not ping either), and a load point lasts under a minute.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def build(redis_url: str, channel: str) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        transports=["websocket"],
        ping_interval=300,
        ping_timeout=60,
    )

    @sio.event
    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        """GET /healthz and POST /publish; anything else is 404."""
        status, body = 404, b"not found"
        if scope["type"] == "http" and scope["path"] == "/healthz":
            status, body = 200, b"ok"
        elif scope["type"] == "http" and scope["path"] == "/publish" and scope["method"] == "POST":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            request = json.loads(b"".join(chunks))
            await sio.emit(request["event"], request["data"], room=request["room"])
            status, body = 200, b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return socketio.ASGIApp(sio, other_asgi_app=http)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--channel", default="socketio", help="Redis pub/sub channel of the manager")
    args = parser.parse_args()
    app = build(args.redis, args.channel)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        ws_ping_interval=None,  # uvicorn's own WebSocket pings, on top of engine.io's
        ws_ping_timeout=None,
    )


if __name__ == "__main__":
    main()
