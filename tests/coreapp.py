"""The transport core alone, as a real process, for transport tests.

It registers one test namespace, ``public:<id>`` (anyone may subscribe; history on;
the sampled lane budgeted by LIVEMART_TEST_BUDGET), an op ``publish`` so clients can
publish into it, and an op ``sleep`` that holds a command queue. No domain module is
loaded: this is what proves ``realtime`` works without knowing rooms or products.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from typing import Any

from realtime import cli
from realtime.auth import Identity
from realtime.broker import HistoryPolicy
from realtime.commands import Args
from realtime.config import Env, Settings
from realtime.node import Namespace, Session
from realtime.server import Core


class PublicNamespace(Namespace):
    prefix = "public"

    def __init__(self, core: Core) -> None:
        super().__init__(core.broker)
        self.history = HistoryPolicy(core.settings.history_size, core.settings.history_ttl_s)
        budget = Env().number("LIVEMART_TEST_BUDGET", 0.0)
        self.sampled_budget_per_s = budget or None

    async def authorize_subscribe(self, identity: Identity, channel_id: str) -> None:
        return None

    async def snapshot(self, identity: Identity, channel_id: str) -> dict[str, Any]:
        return {"channel": channel_id}


def assemble(settings: Settings) -> cli.Assembly:
    core = Core(settings)
    core.node.add_namespace(PublicNamespace(core))

    async def publish(session: Session, args: Args) -> Mapping[str, Any]:
        author = session.identity.require_user()
        lane = "sampled" if args.raw("lane") == "sampled" else "priority"
        data = dict(args.obj("data", optional=True) or {})
        position = await core.node.publish(
            args.text("ch"), args.text("ev", max_len=64), data, lane=lane, author=author
        )
        return {"off": position.offset}

    async def sleep(session: Session, args: Args) -> Mapping[str, Any]:
        """Hold the connection's command queue for a while (for queue-bound tests)."""
        await asyncio.sleep(args.integer("ms", min=0, max=5000) / 1000)
        return {}

    core.node.add_op("publish", publish)
    core.node.add_op("sleep", sleep)
    return cli.Assembly(core=core, modules=[], app=core.asgi_app([]))


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], assemble=assemble))
