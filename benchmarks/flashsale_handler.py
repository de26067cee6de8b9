"""What the commerce side of one reservation costs, without the transport.

Builds the app's modules in-process (embedded: SQLite in a temporary directory and the
in-process ledger), sells out a sale of one unit, then calls the `reserve` op handler
directly — the same function the WebSocket gateway dispatches to — for N attempts by
distinct users and reports the time per attempt. Compare it with the server's CPU time
per command under `livemart loadtest flashsale` to see how much is domain and how much
is transport.

    taskset -c 1 python benchmarks/flashsale_handler.py --attempts 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from commerce import Catalog, Commerce, CommerceSettings
from commerce.inputs import ProductDraft, SaleDraft
from commerce.ops import reserve_op
from realtime.auth import Identity
from realtime.commands import Args
from realtime.config import Settings
from realtime.errors import ProtocolError
from realtime.node import Session
from realtime.server import Core, Module
from rooms.groups import GroupChats, GroupSettings
from rooms.live import LiveRooms, RoomSettings


@dataclass
class Caller:
    """All the op reads of a session: who is calling."""

    identity: Identity


async def main(attempts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        core = Core(Settings(database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        settings = CommerceSettings()
        catalog = Catalog(core, settings=settings)
        rooms = LiveRooms(core, catalog=catalog, settings=RoomSettings.from_env({}))
        groups = GroupChats(core, rooms=None, settings=GroupSettings.from_env({}))
        shop = Commerce(core, catalog=catalog, rooms=rooms, groups=groups, settings=settings)
        modules: list[Module] = [rooms, groups, shop]
        await core.migrate(modules)
        try:
            product = await shop.desk.create_product("merchant", ProductDraft("Tea", 100, "EUR", None))
            draft = SaleDraft(product.id, 1, None, 1, 600, None, None, None, None)
            sale_id = (await shop.desk.create_sale("merchant", draft))["id"]
            reserve = reserve_op(shop.checkout, settings)

            async def attempt(user: str) -> str:
                session = cast(Session, Caller(Identity(user, user)))
                try:
                    await reserve(session, Args({"sale": sale_id, "quantity": 1, "key": f"{user}-k"}))
                except ProtocolError as exc:
                    return exc.code
                return "held"

            await attempt("first-buyer")
            await attempt("warm-up")  # the ledger says sold_out: the flag is set
            await asyncio.sleep(0.05)  # its list of known keys arrives
            started = time.perf_counter()
            outcomes: dict[str, int] = {}
            for i in range(attempts):
                code = await attempt(f"u{i}")
                outcomes[code] = outcomes.get(code, 0) + 1
            elapsed = time.perf_counter() - started
        finally:
            await core.db.close()
    print(
        json.dumps(
            {
                "benchmark": "flashsale_handler",
                "attempts": attempts,
                "per_attempt_us": round(elapsed / attempts * 1e6, 1),
                "attempts_per_s": round(attempts / elapsed),
                "outcomes": outcomes,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().attempts))
