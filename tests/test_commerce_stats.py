"""Room sales figures: the arithmetic alone, then a scripted session on two real processes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from commerce.stats import OrderLine, figures
from loadtest.httpclient import HttpClient, Response
from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import WsClient


@dataclass(frozen=True)
class FakeAudience:
    peak_viewers: int
    viewer_ids: frozenset[str]
    interacting_ids: frozenset[str]
    comments: int
    likes: int


def test_figures_split_conversion_by_interaction() -> None:
    audience = FakeAudience(4, frozenset("abcd"), frozenset("abz"), comments=3, likes=9)
    lines = [
        OrderLine("a", 2, 200, "EUR", "room"),
        OrderLine("c", 1, 100, "EUR", "group"),
        OrderLine("x", 1, 100, "EUR", "api"),  # bought without watching
    ]
    stats = figures(audience, holds=5, lines=lines)
    assert stats["conversion"] == {"all": 0.5, "interacting": 0.5, "silent": 0.5}
    assert (stats["orders"], stats["units"], stats["gmv_cents"], stats["currency"]) == (3, 4, 400, "EUR")
    assert stats["buyers"] == 3
    assert stats["orders_by_source"] == {"room": 1, "group": 1, "api": 1}


def test_figures_with_nobody_and_mixed_currencies() -> None:
    empty = figures(FakeAudience(0, frozenset(), frozenset(), 0, 0), holds=0, lines=[])
    assert empty["conversion"] == {"all": None, "interacting": None, "silent": None}
    assert (empty["gmv_cents"], empty["currency"]) == (0, None)
    mixed = figures(
        FakeAudience(1, frozenset("a"), frozenset(), 0, 0),
        holds=2,
        lines=[OrderLine("a", 1, 100, "EUR", "room"), OrderLine("a", 1, 300, "USD", "room")],
    )
    assert (mixed["gmv_cents"], mixed["currency"]) == (None, None)
    assert mixed["gmv_by_currency"] == {"EUR": 100, "USD": 300}
    assert mixed["buyers"] == 1


ENV = {"LIVEMART_VIEWERS_INTERVAL_S": "0.5", "LIVEMART_PRESENCE_TTL_S": "5"}


def bearer(user: str) -> str:
    return token(user, user.upper(), TEST_SECRET)


async def ok(client: HttpClient, method: str, path: str, user: str | None, **kw: Any) -> Any:
    response: Response = await client.request(
        method, path, token=None if user is None else bearer(user), **kw
    )
    assert response.ok, (method, path, response.status, response.body)
    return response.json()


@pytest.mark.slow
async def test_scripted_session_yields_exact_figures(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    servers: list[LivemartProcess] = [
        livemart.start(database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix, env=ENV)
        for _ in range(2)
    ]
    http = [HttpClient(s.url, timeout=30.0) for s in servers]
    viewers = [f"v{i}" for i in range(1, 7)]
    clients: dict[str, WsClient] = {}
    try:
        a, b = http
        room = str((await ok(a, "POST", "/api/rooms", "host", json={"title": "Evening drop"}))["id"])
        product = await ok(
            a,
            "POST",
            "/api/products",
            "host",
            json={"title": "Teapot", "price_cents": 2500, "currency": "EUR"},
        )
        group = await ok(a, "POST", "/api/groups", "host", json={"name": "VIP"})
        for member in ("m1", "v5"):
            invite = await ok(a, "POST", f"/api/groups/{group['id']}/invites", "host", json={})
            await ok(b, "POST", "/api/groups/join", member, json={"code": invite["code"]})
        room_sale = await ok(
            a, "POST", "/api/flash-sales", "host",
            json={"product_id": product["id"], "room_id": room, "stock": 50, "per_user_limit": 2},
        )  # fmt: skip
        card_sale = await ok(
            b, "POST", "/api/flash-sales", "host",
            json={"product_id": product["id"], "room_id": room, "group_id": group["id"], "stock": 10,
                  "price_cents": 2000},
        )  # fmt: skip
        card = {
            "text": "members only",
            "client_msg_id": "card-1",
            "kind": "sale_card",
            "ref": {"sale_id": card_sale["id"]},
        }
        await ok(a, "POST", f"/api/groups/{group['id']}/messages", "host", json=card)

        # Six signed-in viewers, on both processes; three of them interact.
        for i, user in enumerate(viewers):
            clients[user] = await WsClient.connect(servers[i % 2].ws_url, bearer(user))
            await clients[user].call("subscribe", ch=f"room:{room}")
        await clients["v1"].call("comment", room=room, text="love it")
        await clients["v2"].call("comment", room=room, text="price?")
        await clients["v3"].call("like", room=room, count=5)
        await clients["v1"].call("like", room=room, count=2)

        # Buying: through the room (WS), through the group card, and straight over the API.
        async def room_buy(user: str, quantity: int, *, pay: bool = True) -> None:
            held = await clients[user].call(
                "reserve", sale=room_sale["id"], quantity=quantity, key=f"{user}-1"
            )
            assert held["source"] == "room"
            if pay:
                await ok(b, "POST", f"/api/reservations/{held['id']}/confirm", user)

        async def http_buy(user: str, sale_id: str, source: str | None) -> None:
            body = {"quantity": 1} if source is None else {"quantity": 1, "source": source}
            held = await ok(
                a, "POST", f"/api/flash-sales/{sale_id}/reservations", user, json=body,
                headers={"Idempotency-Key": f"{user}-1"},
            )  # fmt: skip
            await ok(b, "POST", f"/api/reservations/{held['id']}/confirm", user)

        await room_buy("v1", 2)
        await room_buy("v4", 1)
        await room_buy("v2", 1, pay=False)  # a hold, never paid
        await http_buy("m1", card_sale["id"], "group")  # never watched
        await http_buy("v5", card_sale["id"], "group")
        await http_buy("a1", room_sale["id"], None)  # source defaults to api
        not_member = await a.request(
            "POST", f"/api/flash-sales/{card_sale['id']}/reservations", json={}, token=bearer("v6")
        )
        assert (not_member.status, not_member.error_code()) == (403, "not_member")

        expected = {
            "room_id": room,
            "peak_viewers": 6,
            "unique_viewers": 6,
            "comments": 2,
            "likes": 7,
            "holds": 6,
            "orders": 5,
            "units": 6,
            "gmv_cents": 2 * 2500 + 2500 + 2000 + 2000 + 2500,
            "currency": "EUR",
            "gmv_by_currency": {"EUR": 14000},
            "buyers": 5,
            # viewers who bought: v1 v4 v5 of six; interacting v1 of v1-v3; silent v4 v5 of v4-v6
            "conversion": {"all": 0.5, "interacting": 0.3333, "silent": 0.6667},
            "orders_by_source": {"room": 2, "group": 2, "api": 1},
        }
        stats: Any = None
        for _ in range(40):  # presence and likes are aggregated on short intervals
            stats = await ok(b, "GET", f"/api/rooms/{room}/stats", "host")
            if stats == expected:
                break
            await asyncio.sleep(0.25)
        assert stats == expected

        forbidden = await a.request("GET", f"/api/rooms/{room}/stats", token=bearer("v1"))
        assert (forbidden.status, forbidden.error_code()) == (403, "forbidden")
        guest = await a.request("GET", f"/api/rooms/{room}/stats")
        assert (guest.status, guest.error_code()) == (401, "unauthorized")
        missing = await a.request("GET", "/api/rooms/999999/stats", token=bearer("host"))
        assert missing.status == 404
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
        await asyncio.gather(*(c.close() for c in http))
