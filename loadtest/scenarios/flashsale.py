"""`flashsale`: buyers race for a limited stock with `reserve` ops at a fixed arrival rate.

What matters here is correctness under contention: holds never exceed the stock
(`oversold`), no buyer holds more than the per-user limit (`duplicates`), and the sale's
`remaining` agrees with what was sold. A reply, held or refused, is this scenario's
delivery, and its latency is the reservation latency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from loadtest.httpclient import HttpClient
from loadtest.options import Options
from loadtest.plan import Plan
from loadtest.scenarios import base
from loadtest.stats import Recorder, Totals, now_us
from loadtest.summary import per_s
from loadtest.tokens import mint
from loadtest.wsclient import Client

LANE = "reserve"
OUTCOMES = ("sold_out", "limit_exceeded")
"""Refusals that are the expected answer once stock or the buyer's limit is used up."""
PER_USER_LIMIT = 1
PRICE_CENTS = 1990
SALE_PRICE_CENTS = 990
HOLD_MARGIN_S = 600
"""Holds must outlive the run and the final check, or expiries would return stock."""


class FlashSale:
    name = "flashsale"

    async def prepare(self, opts: Options, api: HttpClient, run_id: str) -> Plan:
        token = mint(opts.secret, f"lt-{run_id}-host", "loadtest host", base.token_ttl(opts))
        (room,) = await base.create_rooms(api, token, 1, run_id)
        product = await base.call(
            api,
            "POST",
            "/api/products",
            token=token,
            json={"title": f"loadtest {run_id}", "price_cents": PRICE_CENTS, "currency": "EUR"},
        )
        sale = await base.call(
            api,
            "POST",
            "/api/flash-sales",
            token=token,
            json={
                "product_id": base.identifier(product, "product"),
                "stock": opts.stock,
                "price_cents": SALE_PRICE_CENTS,
                "per_user_limit": PER_USER_LIMIT,
                "hold_seconds": int(opts.ramp + opts.duration + opts.drain) + HOLD_MARGIN_S,
                "room_id": room,
            },
        )
        members = base.room_members(run_id, opts.viewers, [room])
        return base.plan_for(
            opts,
            run_id,
            members,
            rooms=(room,),
            sale_id=base.identifier(sale, "flash sale"),
            stock=opts.stock,
            per_user_limit=PER_USER_LIMIT,
        )

    def driver(self, plan: Plan, rec: Recorder, clients: list[Client]) -> base.Driver:
        return Buyer(plan, rec, clients)

    def expected(self, plan: Plan, totals: Totals) -> dict[str, int]:
        return {LANE: sum(totals.sent.values())}

    async def finish(self, plan: Plan, api: HttpClient, totals: Totals) -> dict[str, Any]:
        return sale_summary(plan, totals, await remaining(api, plan))


async def remaining(api: HttpClient, plan: Plan) -> int | None:
    """The sale's live `remaining` after the run, or None if the server would not say."""
    try:
        sale = await base.call(api, "GET", f"/api/flash-sales/{plan.sale_id}")
    except base.SetupError:
        return None
    value = sale.get("remaining") if isinstance(sale, dict) else None
    return value if isinstance(value, int) else None


def sale_summary(plan: Plan, totals: Totals, left: int | None) -> dict[str, Any]:
    """The flashsale fields of a run by the Python workers."""
    held: Counter[str] = Counter()
    for extra in totals.extras:
        held.update(extra.get("held", {}))
    attempts = per_s(sum(totals.sent.values()), totals.sends_s)
    return sale_fields(plan, held, attempts, totals.counts, left)


def sale_fields(
    plan: Plan,
    held: Mapping[str, int],
    attempts_per_s: float | None,
    counts: Mapping[str, int],
    left: int | None,
) -> dict[str, Any]:
    """The flashsale fields: what was held per buyer, and whether it adds up."""
    reserved = sum(held.values())
    return {
        "stock": plan.stock,
        "reserved": reserved,
        "oversold": max(0, reserved - plan.stock),
        "duplicates": sum(1 for units in held.values() if units > plan.per_user_limit),
        "attempts_per_s": attempts_per_s,
        "buyers": len(held),
        "sold_out": counts.get("sold_out", 0),
        "limit_exceeded": counts.get("limit_exceeded", 0),
        "remaining": left,
        "remaining_expected": plan.stock - reserved,
    }


class Buyer(base.Driver):
    def __init__(self, plan: Plan, rec: Recorder, clients: list[Client]) -> None:
        super().__init__(plan, rec, clients)
        self.held: Counter[str] = Counter()
        rec.extra["held"] = self.held

    async def send(self, k: int, due: float) -> None:
        client = self.next_client()
        self.rec.sent[("sale", LANE)] += 1
        if client is None:
            self.rec.error("no_connection")
            return
        key = f"{self.plan.run_id}-{k}"
        reply = await self.command(client, due, "reserve", sale=self.plan.sale_id, quantity=1, key=key)
        if reply is None:
            return
        self.rec.delivery(LANE, int(due * 1e6), now_us())
        code = base.error_code(reply)
        if code in OUTCOMES:
            self.rec.counts[code] += 1
        elif code is not None:
            self.rec.error(code)
        elif reply.get("ok", {}).get("status") == "held":
            self.held[client.member.user_id] += int(reply["ok"].get("quantity", 1))
        else:
            self.rec.error("unexpected_reply")
