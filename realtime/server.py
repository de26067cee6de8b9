"""One livemart process: the transport core, its HTTP app and the uvicorn runner.

:class:`Core` builds what every domain plugs into (broker, node, gateway, database,
tokens, metrics). Domains are :class:`Module` objects; the composition root creates
them with the core and hands them to :meth:`Core.asgi_app`. Shutdown runs in a fixed
order: refuse new sockets, ask clients to reconnect (close 1012), wait a bounded time,
stop modules, flush the broker, close the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import redis_client
from .auth import TokenAuthority
from .broker import Broker, MemoryBroker
from .config import Settings
from .errors import CloseCode, ProtocolError
from .gateway import Gateway
from .http import (
    JSON,
    http_error_handler,
    json_body,
    protocol_error_handler,
    require_api_key,
    server_error_handler,
)
from .metrics import Metrics
from .node import Node
from .redis_broker import RedisBroker
from .redis_client import RedisClient
from .resp import RespClients
from .storage import Database, migrate

log = logging.getLogger("livemart")

#: Bound on each readiness probe of a dependency.
READY_TIMEOUT_S = 2.0


class Module(Protocol):
    """A domain plugged into the core (rooms, commerce, …)."""

    #: The module's Alembic versions folder, or None if it owns no tables.
    migrations: Path | None

    def routes(self) -> Sequence[BaseRoute]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_broker(settings: Settings) -> Broker:
    if settings.redis_url is None:
        return MemoryBroker()
    return RedisBroker(settings.redis_url, prefix=settings.redis_prefix, history_ttl_s=settings.history_ttl_s)


class Core:
    """The transport stack of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.tokens = TokenAuthority(settings.secret)
        self.broker = create_broker(settings)
        self.node = Node(self.broker, self.metrics, settings)
        self.gateway = Gateway(self.node, self.tokens, settings, self.metrics)
        self.db = Database(settings.database_url, pool_size=settings.database_pool_size)
        #: Shared Redis (or Redis Cluster) client for domain state (counters, presence,
        #: stock); None when embedded. Domains keep each room's or sale's keys under one
        #: hash tag (``redis_key``) so their scripts run on one cluster node.
        self.redis: RedisClient | None = None
        if settings.redis_url is not None:
            self.redis = redis_client.connect(settings.redis_url)
        #: The lean connections (one per Redis server) that domains batch their commands
        #: on (:class:`~realtime.redis_batch.Batcher`); closed after the modules stop.
        self.redis_connections = RespClients()
        self._background: list[asyncio.Task[None]] = []

    def redis_key(self, tag: str, name: str) -> str:
        """A Redis key in hash slot ``tag`` (e.g. ``room:7``), under this deployment's prefix."""
        return f"{self.settings.redis_prefix}{{{tag}}}:{name}"

    def asgi_app(self, modules: Sequence[Module], *, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
        """The HTTP app: core endpoints, every module's routes, lifecycle."""
        routes: list[BaseRoute] = [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
            Route("/api/publish", self._publish, methods=["POST"]),
        ]
        for module in modules:
            routes.extend(module.routes())
        routes.extend(extra_routes)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self.broker.start()
            self._background.append(asyncio.create_task(self.metrics.watch_loop_lag()))
            self._background.append(asyncio.create_task(self.gateway.keepalive()))
            started: list[Module] = []
            try:
                for module in modules:
                    await module.start()
                    started.append(module)
                settle_garbage_collector()
                yield
            finally:
                self.gateway.close_all(CloseCode.SERVICE_RESTART, "server restarting: reconnect")
                for module in reversed(started):
                    await module.stop()
                for task in self._background:
                    task.cancel()
                await asyncio.gather(*self._background, return_exceptions=True)
                await self.broker.close()
                await self.redis_connections.aclose()
                if self.redis is not None:
                    await self.redis.aclose()
                await self.db.close()

        middleware = []
        if self.settings.allowed_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(self.settings.allowed_origins),
                    allow_methods=["GET", "POST", "DELETE"],
                    allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                    expose_headers=["Location"],
                )
            )
        app = Starlette(
            routes=routes,
            lifespan=lifespan,
            middleware=middleware,
            exception_handlers={
                ProtocolError: protocol_error_handler,
                HTTPException: http_error_handler,
                500: server_error_handler,
            },
        )
        app.state.settings = self.settings
        app.state.tokens = self.tokens
        app.state.core = self
        return app

    async def migrate(self, modules: Sequence[Module]) -> None:
        locations = [m.migrations for m in modules if m.migrations is not None]
        await migrate(self.settings.database_url, locations)

    # --- core endpoints -----------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return JSON({"status": "ok", "pid": os.getpid()})

    async def _readyz(self, request: Request) -> Response:
        checks: dict[str, str] = {}
        for name, probe in (("database", self.db.ping), ("broker", self.broker.ping)):
            try:
                await asyncio.wait_for(probe(), READY_TIMEOUT_S)
                checks[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                checks[name] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values()) and not self.gateway.draining
        return JSON({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _publish(self, request: Request) -> Response:
        require_api_key(request)
        body = await json_body(request)
        channel = body.text("ch" if body.raw("ch") is not None else "channel", max_len=200)
        event = body.text("event", max_len=64)
        if event.startswith("$"):
            raise ProtocolError("bad_request", "event names starting with $ are reserved")
        data = body.obj("data", optional=True) or {}
        position = await self.node.publish(channel, event, dict(data))
        return JSON({"off": position.offset, "epoch": position.epoch})


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; with ``reuse_port`` several processes can share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


#: CPython's collection thresholds with full collections a hundred times rarer: the
#: young generations stay small and quick (a few ms at most here); a full collection
#: walks every live object (~60 ms with 2,000 connections) and so waits ~1,000 middle
#: collections instead of 10.
GC_THRESHOLDS = (700, 10, 1000)


def settle_garbage_collector() -> None:
    """Keep the cyclic collector from pausing the event loop for tens of milliseconds.

    Everything that exists once the app has started (modules, tables, compiled code)
    lives as long as the process, so it is frozen out of every later collection, and
    full collections are made rare (``GC_THRESHOLDS``). Measured on the group-message
    benchmark: full collections of 20-60 ms were the largest part of the ack tail.
    Reference counting still frees almost everything at once; only garbage cycles that
    survive the young collections wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(
    core: Core, app: Any, *, host: str, port: int, reuse_port: bool = False, log_level: str = "info"
) -> None:
    """Serve HTTP and WebSocket on one port until SIGINT/SIGTERM."""
    sock = bind_socket(host, port, reuse_port=reuse_port)
    config = uvicorn.Config(
        app,
        ws=core.gateway.protocol_factory,  # type: ignore[arg-type]
        lifespan="on",
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(core.settings.shutdown_timeout_s) or 1,
        server_header=False,
    )
    server = uvicorn.Server(config)
    bound_port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"livemart serving http://{shown_host}:{bound_port}/", flush=True)
    if core.settings.secret_generated:
        log.warning("LIVEMART_SECRET is unset: using a random secret; tokens won't survive a restart")
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    sys.stdout.flush()
