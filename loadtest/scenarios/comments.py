"""`comments`: viewers comment over WebSocket and every viewer of the room receives it.

Real `comment` ops exercise the server's whole comment path (auth, rate limits, moderation,
fan-out). Senders take turns, so each user comments at rate / viewers per second; above
the server's per-user limit (about one a second) replies turn into `rate_limited` errors.
"""

from __future__ import annotations

from typing import Any

from loadtest import markers
from loadtest.httpclient import HttpClient
from loadtest.options import Options
from loadtest.plan import Plan
from loadtest.scenarios import base
from loadtest.stats import Recorder, Totals
from loadtest.summary import fanout_expected
from loadtest.tokens import mint
from loadtest.wsclient import Client

LANE = "comment"


class Comments:
    name = "comments"

    async def prepare(self, opts: Options, api: HttpClient, run_id: str) -> Plan:
        token = mint(opts.secret, f"lt-{run_id}-host", "loadtest host", base.token_ttl(opts))
        rooms = await base.create_rooms(api, token, opts.rooms, run_id)
        members = base.room_members(run_id, opts.viewers, rooms)
        return base.plan_for(opts, run_id, members, rooms=tuple(rooms))

    def driver(self, plan: Plan, rec: Recorder, clients: list[Client]) -> base.Driver:
        return Commenter(plan, rec, clients)

    def expected(self, plan: Plan, totals: Totals) -> dict[str, int]:
        # A rejected comment is never broadcast, so only accepted ones are owed to viewers.
        return fanout_expected(totals.accepted, totals.subscribed)

    async def finish(self, plan: Plan, api: HttpClient, totals: Totals) -> dict[str, Any]:
        return {
            "rooms": len(plan.rooms),
            "comments_accepted": sum(totals.accepted.values()),
            "rate_limited": totals.errors.get("rate_limited", 0),
        }


class Commenter(base.Driver):
    async def send(self, k: int, due: float) -> None:
        client = self.next_client()
        if client is None:
            self.rec.sent[("", LANE)] += 1
            self.rec.error("no_connection")
            return
        channel = client.member.channel
        self.rec.sent[(channel, LANE)] += 1
        text = f"{markers.make(LANE, int(due * 1e6))} comment {k}"
        reply = await self.command(client, due, "comment", room=client.member.target, text=text)
        if reply is None:
            return
        code = base.error_code(reply)
        if code is None:
            self.rec.accepted[(channel, LANE)] += 1
        else:
            self.rec.error(code)
