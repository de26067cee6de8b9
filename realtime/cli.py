"""The ``livemart`` command line: serve, migrate, token (plus what the root adds).

The CLI knows no domain: the composition root passes an ``assemble`` function that
builds the core and its modules from settings, and may register more sub-commands
(the load tester).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .auth import TokenAuthority
from .config import ConfigError, Env, Settings
from .server import Core, Module, run
from .supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class Assembly:
    """A fully wired process: the core, its modules and the ASGI app."""

    core: Core
    modules: Sequence[Module]
    app: Any


Assemble = Callable[[Settings], Assembly]
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser(register: Sequence[Register] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livemart", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve HTTP and WebSocket on one port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-migrate", action="store_true", help="skip the schema upgrade")
    serve.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT on the socket")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (needs REDIS_URL)"
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=None)

    migrate = sub.add_parser("migrate", help="bring the database schema to head")
    migrate.set_defaults(handler=None)

    token = sub.add_parser("token", help="print a signed access token")
    token.add_argument("--user", required=True)
    token.add_argument("--name")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 1 day)")
    token.set_defaults(handler=None)

    for add in register:
        add(sub)
    return parser


def main(argv: Sequence[str] | None, *, assemble: Assemble, register: Sequence[Register] = ()) -> int:
    args = build_parser(register).parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # websockets logs every connection at INFO and, at DEBUG, request lines (with
    # ?token=) and frame contents (private messages): keep it to warnings.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.handler is not None:
        return int(args.handler(args))
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"livemart: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        if Env().text("LIVEMART_SECRET") is None:
            print("livemart: set LIVEMART_SECRET to the server's secret first", file=sys.stderr)
            return 2
        print(TokenAuthority(settings.secret).issue(args.user, name=args.name, ttl_s=args.ttl))
        return 0
    if args.command == "serve" and args.workers > 1 and settings.redis_url is None:
        print("livemart: --workers needs REDIS_URL: workers share state through Redis", file=sys.stderr)
        return 2
    try:
        assembly = assemble(settings)
    except ConfigError as exc:
        print(f"livemart: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate" or not args.no_migrate:
        asyncio.run(_migrate(assembly))
        if args.command == "migrate":
            print("database schema is at head")
            return 0
    if args.workers > 1:
        return _supervise(args, settings)
    run(
        assembly.core,
        assembly.app,
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port,
        log_level=args.log_level,
    )
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """Re-run this program as N ``serve --reuse-port`` workers on one port."""
    if settings.secret_generated:
        print("livemart: set LIVEMART_SECRET: workers must share one token secret", file=sys.stderr)
        return 2
    command = [sys.executable, sys.argv[0], "serve", "--host", args.host, "--port", str(args.port)]
    command += ["--reuse-port", "--no-migrate", "--log-level", args.log_level]
    print(f"livemart serving http://{args.host}:{args.port}/ with {args.workers} workers", flush=True)
    return Supervisor(command, args.workers, stop_timeout_s=settings.shutdown_timeout_s).run()


async def _migrate(assembly: Assembly) -> None:
    try:
        await assembly.core.migrate(assembly.modules)
    finally:
        await assembly.core.db.close()
