"""`viewers`: many viewers watch rooms while a backend publishes into them at a fixed rate.

Measures pure fan-out: one HTTP publish becomes one push per subscribed viewer. Every
PRIORITY_EVERY-th message is a `purchase` event instead of a `comment`, so loss in the
droppable comment lane and the never-dropped priority lane is counted apart.
"""

from __future__ import annotations

from typing import Any

from loadtest import markers
from loadtest.counting import sample_every
from loadtest.httpclient import HttpClient, HttpError, HttpTimeout
from loadtest.options import Options
from loadtest.plan import Plan
from loadtest.scenarios import base
from loadtest.stats import Recorder, Totals, now_us, record_us
from loadtest.summary import fanout_expected
from loadtest.tokens import mint
from loadtest.wsclient import Client

PRIORITY_EVERY = 10
PUBLISH_CONNECTIONS = 64
"""Keep-alive connections a worker may use for publishing at once."""


class Viewers:
    name = "viewers"

    async def prepare(self, opts: Options, api: HttpClient, run_id: str) -> Plan:
        host_id, host_name = f"lt-{run_id}-host", "loadtest host"
        token = mint(opts.secret, host_id, host_name, base.token_ttl(opts))
        rooms = await base.create_rooms(api, token, opts.rooms, run_id)
        members = base.room_members(run_id, opts.viewers, rooms)
        # Each publish reaches one room's viewers; workers split the connections.
        per_worker_s = opts.rate * opts.viewers / opts.rooms / opts.workers
        every = sample_every(per_worker_s)
        return base.plan_for(opts, run_id, members, rooms=tuple(rooms), sample_every=every)

    def driver(self, plan: Plan, rec: Recorder, clients: list[Client]) -> base.Driver:
        return Publisher(plan, rec, clients)

    def expected(self, plan: Plan, totals: Totals) -> dict[str, int]:
        return fanout_expected(totals.accepted, totals.subscribed)

    async def finish(self, plan: Plan, api: HttpClient, totals: Totals) -> dict[str, Any]:
        return {"rooms": len(plan.rooms)}


def publication(k: int, due: float, run_id: str) -> tuple[str, str, dict[str, Any]]:
    """(lane, event, data) of message `k`; the marker rides in a string field."""
    due_us = int(due * 1e6)
    if k % PRIORITY_EVERY == PRIORITY_EVERY - 1:
        marker = markers.make("priority", due_us)
        return "priority", "purchase", {"name": "loadtest", "product_title": marker}
    marker = markers.make("comment", due_us)
    data = {
        "id": f"{run_id}-{k}",
        "user_id": f"lt-{run_id}-publisher",
        "name": "loadtest",
        "text": marker,
        "ts": due_us // 1000,
    }
    return "comment", "comment", data


class Publisher(base.Driver):
    count_only = True
    lanes = ("comment", "priority")

    def __init__(self, plan: Plan, rec: Recorder, clients: list[Client]) -> None:
        super().__init__(plan, rec, clients)
        self.http = HttpClient(
            plan.http_url, max_connections=PUBLISH_CONNECTIONS, timeout=base.REPLY_TIMEOUT_S
        )
        self.headers = {"X-API-Key": plan.api_key or ""}

    async def send(self, k: int, due: float) -> None:
        room = self.plan.rooms[k % len(self.plan.rooms)]
        channel = f"room:{room}"
        lane, event, data = publication(k, due, self.plan.run_id)
        self.rec.sent[(channel, lane)] += 1
        body = {"channel": channel, "event": event, "data": data}
        try:
            response = await self.http.request("POST", "/api/publish", json=body, headers=self.headers)
        except HttpTimeout:
            self.rec.error("timeout")
            return
        except HttpError:
            self.rec.error("publish_failed")
            return
        if not response.ok:
            self.rec.error(response.error_code())
            return
        record_us(self.rec.histograms["ack"], now_us() - due * 1e6)
        self.rec.accepted[(channel, lane)] += 1

    async def close(self) -> None:
        await self.http.close()
