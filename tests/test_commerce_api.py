"""The flash-sale HTTP API in-process, on both stacks: embedded (SQLite, in-process ledger)
and cluster (PostgreSQL, Redis ledger). Multi-process and WebSocket behaviour is in
test_commerce_flashsale.py against real `livemart serve` processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa

from commerce import Catalog, Commerce, CommerceSettings
from commerce.entities import now_ms
from commerce.ledger import Attempt, Outcome
from commerce.models import reservations, sales
from commerce.ops import reserve_op
from commerce.redis_ledger import SaleKeys
from realtime.auth import Identity
from realtime.commands import Args
from realtime.config import Settings
from realtime.errors import ProtocolError
from realtime.node import Session
from realtime.server import Core, Module
from rooms.groups import GroupChats, GroupSettings
from rooms.live import LiveRooms, RoomSettings

SECRET = "commerce-api-test-secret-0123456789abcdef"
API_KEY = "commerce-api-key"
_keys = itertools.count(1)


@dataclass
class Shop:
    http: httpx.AsyncClient
    core: Core
    commerce: Commerce

    def auth(self, user: str, name: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.core.tokens.issue(user, name=name or user.title())}"}

    async def call(self, method: str, path: str, user: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers.update(self.auth(user))
        return await self.http.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, user: str | None = None, **kw: Any) -> Any:
        response = await self.call(method, path, user, **kw)
        assert response.status_code < 300, response.text
        return response.json()

    async def room(self, host: str) -> str:
        return str((await self.ok("POST", "/api/rooms", host, json={"title": "Live"}))["id"])

    async def sale(self, owner: str = "merchant", **terms: Any) -> dict[str, Any]:
        product = await self.ok(
            "POST", "/api/products", owner, json={"title": "Tea", "price_cents": 1250, "currency": "eur"}
        )
        body = {"product_id": product["id"], "stock": 5, "per_user_limit": 2, "hold_seconds": 60, **terms}
        sale: dict[str, Any] = await self.ok("POST", "/api/flash-sales", owner, json=body)
        return sale

    async def reserve(self, sale_id: str, user: str, key: str | None = None, **body: Any) -> httpx.Response:
        headers = {"idempotency-key": key or f"key-{next(_keys)}"}
        return await self.call(
            "POST", f"/api/flash-sales/{sale_id}/reservations", user, json=body, headers=headers
        )

    async def remaining(self, sale_id: str) -> int:
        value: int = (await self.ok("GET", f"/api/flash-sales/{sale_id}"))["remaining"]
        return value


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.fixture(params=["embedded", pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.postgres])])
async def shop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shop]:
    if request.param == "embedded":
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}", secret=SECRET, api_key=API_KEY
        )
    else:
        settings = Settings(
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
            database_url=request.getfixturevalue("postgres_url"),
            secret=SECRET,
            api_key=API_KEY,
        )
    core = Core(settings)
    shop_settings = CommerceSettings(sweep_interval_s=0.1)
    catalog = Catalog(core, settings=shop_settings)
    rooms = LiveRooms(core, catalog=catalog, settings=RoomSettings.from_env({}))
    groups = GroupChats(core, rooms=None, settings=GroupSettings.from_env({}))
    commerce = Commerce(core, catalog=catalog, rooms=rooms, groups=groups, settings=shop_settings)
    modules: list[Module] = [rooms, groups, commerce]
    await core.migrate(modules)
    app = core.asgi_app(modules)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
            yield Shop(http, core, commerce)


async def test_products_and_sales_validate_their_input(shop: Shop) -> None:
    good = {"title": "Tea", "price_cents": 100, "currency": "EUR"}
    assert error_of(await shop.call("POST", "/api/products", None, json=good)) == (401, "unauthorized")
    for bad in (
        {**good, "title": "  "},
        {**good, "price_cents": -1},
        {**good, "price_cents": "100"},
        {**good, "currency": "EURO"},
        {**good, "image_url": "javascript:alert(1)"},
    ):
        assert error_of(await shop.call("POST", "/api/products", "m", json=bad)) == (400, "bad_request"), bad
    product = await shop.ok("POST", "/api/products", "m", json=good)
    assert product["owner_id"] == "m"
    sale = {"product_id": product["id"], "stock": 3}
    for bad in (
        {**sale, "stock": 0},
        {**sale, "stock": 10**9},
        {**sale, "per_user_limit": 0},
        {**sale, "hold_seconds": 0},
        {**sale, "ends_at": "2001-01-01T00:00:00Z"},
        {**sale, "starts_at": "tomorrow"},
        {**sale, "starts_at": "2030-01-01T00:00:00"},
    ):
        assert error_of(await shop.call("POST", "/api/flash-sales", "m", json=bad)) == (400, "bad_request"), (
            bad
        )
    assert error_of(await shop.call("POST", "/api/flash-sales", "other", json=sale)) == (403, "forbidden")
    unknown = {**sale, "product_id": "nope"}
    assert error_of(await shop.call("POST", "/api/flash-sales", "m", json=unknown)) == (404, "not_found")
    someone_elses_room = await shop.room("host")
    in_room = {**sale, "room_id": someone_elses_room}
    assert error_of(await shop.call("POST", "/api/flash-sales", "m", json=in_room)) == (403, "forbidden")
    created = await shop.ok("POST", "/api/flash-sales", "m", json=sale)
    assert created["remaining"] == 3
    assert created["price_cents"] == 100  # the product's price when none is given
    assert created["status"] == "active"
    assert error_of(await shop.call("GET", "/api/flash-sales/nope")) == (404, "not_found")


async def test_reserve_confirm_order(shop: Shop) -> None:
    room = await shop.room("merchant")
    sale = await shop.sale(room_id=room, price_cents=999)
    response = await shop.reserve(sale["id"], "buyer", quantity=2, source="group")
    assert response.status_code == 201
    held = response.json()
    assert held["status"] == "held"
    assert (held["sale_id"], held["quantity"], held["source"]) == (sale["id"], 2, "group")
    assert held["expires_at"].endswith("Z")
    assert await shop.remaining(sale["id"]) == 3

    reply = await shop.ok("POST", f"/api/reservations/{held['id']}/confirm", "buyer")
    order = reply["order"]
    assert (order["reservation_id"], order["quantity"], order["amount_cents"]) == (held["id"], 2, 1998)
    assert (order["currency"], order["source"], order["room_id"]) == ("EUR", "group", room)
    again = await shop.call("POST", f"/api/reservations/{held['id']}/confirm", "buyer")
    assert error_of(again) == (409, "conflict")
    assert error_of(await shop.call("DELETE", f"/api/reservations/{held['id']}", "buyer")) == (
        409,
        "conflict",
    )
    orders = (await shop.ok("GET", "/api/orders", "buyer"))["orders"]
    assert [o["id"] for o in orders] == [order["id"]]
    assert (await shop.ok("GET", "/api/orders", "someone"))["orders"] == []
    assert await shop.remaining(sale["id"]) == 3


async def test_bad_reservations_leave_stock_unchanged(shop: Shop) -> None:
    sale = await shop.sale(per_user_limit=2)
    sale_id = sale["id"]
    for quantity in (0, -1, 10**12, "2", 2.5):
        assert error_of(await shop.reserve(sale_id, "b", quantity=quantity)) == (400, "bad_request"), quantity
    assert error_of(await shop.reserve(sale_id, "b", quantity=3)) == (409, "limit_exceeded")
    assert error_of(await shop.reserve(sale_id, "b", source="tv")) == (400, "bad_request")
    assert error_of(await shop.reserve("unknown", "b")) == (404, "not_found")
    guest = await shop.call("POST", f"/api/flash-sales/{sale_id}/reservations", None, json={})
    assert error_of(guest) == (401, "unauthorized")
    held = (await shop.reserve(sale_id, "owner-of-hold")).json()
    assert await shop.remaining(sale_id) == 4
    mine = f"/api/reservations/{held['id']}"
    assert error_of(await shop.call("POST", f"{mine}/confirm", "thief")) == (403, "forbidden")
    assert error_of(await shop.call("DELETE", mine, "thief")) == (403, "forbidden")
    assert error_of(await shop.call("POST", "/api/reservations/nope/confirm", "b")) == (404, "not_found")
    assert await shop.remaining(sale_id) == 4


async def test_idempotency_key_replays_the_same_reservation(shop: Shop) -> None:
    sale = await shop.sale(per_user_limit=3)
    first = await shop.reserve(sale["id"], "b", key="K-1")
    replays = await asyncio.gather(*(shop.reserve(sale["id"], "b", key="K-1") for _ in range(5)))
    assert {r.json()["id"] for r in replays} == {first.json()["id"]}
    assert all(r.headers.get("idempotent-replayed") == "true" for r in replays)
    assert "idempotent-replayed" not in first.headers
    assert await shop.remaining(sale["id"]) == 4
    other_user = await shop.reserve(sale["id"], "c", key="K-1")
    assert other_user.json()["id"] != first.json()["id"]
    other_sale = await shop.sale()
    assert error_of(await shop.reserve(other_sale["id"], "b", key="K-1")) == (409, "conflict")
    assert await shop.remaining(other_sale["id"]) == 5
    # Released, the key still names that reservation; it never takes a second unit.
    await shop.ok("DELETE", f"/api/reservations/{first.json()['id']}", "b")
    replay = await shop.reserve(sale["id"], "b", key="K-1")
    assert (replay.json()["id"], replay.json()["status"]) == (first.json()["id"], "released")
    assert await shop.remaining(sale["id"]) == 4


async def test_release_returns_stock_and_sold_out_recovers(shop: Shop) -> None:
    sale = await shop.sale(stock=2, per_user_limit=1)
    a = (await shop.reserve(sale["id"], "a")).json()
    await shop.reserve(sale["id"], "b")
    assert error_of(await shop.reserve(sale["id"], "c")) == (409, "sold_out")
    assert error_of(await shop.reserve(sale["id"], "d")) == (409, "sold_out")
    released = await shop.ok("DELETE", f"/api/reservations/{a['id']}", "a")
    assert released["status"] == "released"
    assert (await shop.ok("DELETE", f"/api/reservations/{a['id']}", "a"))["status"] == "released"
    assert await shop.remaining(sale["id"]) == 1
    assert (await shop.reserve(sale["id"], "c")).status_code == 201
    assert await shop.remaining(sale["id"]) == 0
    expired = await shop.call("POST", f"/api/reservations/{a['id']}/confirm", "a")
    assert error_of(expired) == (409, "conflict")


async def test_unconfirmed_holds_expire(shop: Shop) -> None:
    sale = await shop.sale(stock=3, hold_seconds=1)
    late = (await shop.reserve(sale["id"], "late")).json()
    paid = (await shop.reserve(sale["id"], "paid")).json()
    await shop.ok("POST", f"/api/reservations/{paid['id']}/confirm", "paid")
    assert await shop.remaining(sale["id"]) == 1
    for _ in range(50):  # the sweeper runs every 0.1 s; the hold lasts 1 s
        if await shop.remaining(sale["id"]) == 2:
            break
        await asyncio.sleep(0.1)
    response = await shop.call("POST", f"/api/reservations/{late['id']}/confirm", "late")
    assert error_of(response) == (410, "expired")
    assert await shop.remaining(sale["id"]) == 2
    assert len((await shop.ok("GET", "/api/orders", "paid"))["orders"]) == 1


async def test_sale_window(shop: Shop) -> None:
    later = await shop.sale(starts_at="2099-01-01T00:00:00Z")
    assert later["status"] == "scheduled"
    assert error_of(await shop.reserve(later["id"], "b")) == (409, "not_started")
    soon_over = await shop.sale(ends_at=time.time() + 1.0)
    assert (await shop.reserve(soon_over["id"], "b")).status_code == 201
    await asyncio.sleep(1.1)
    assert error_of(await shop.reserve(soon_over["id"], "c")) == (409, "ended")


async def test_group_sale_is_for_members_only(shop: Shop) -> None:
    group = await shop.ok("POST", "/api/groups", "merchant", json={"name": "Fans"})
    invite = await shop.ok("POST", f"/api/groups/{group['id']}/invites", "merchant", json={})
    await shop.ok("POST", "/api/groups/join", "member", json={"code": invite["code"]})
    product = await shop.ok(
        "POST", "/api/products", "member", json={"title": "x", "price_cents": 1, "currency": "EUR"}
    )
    not_admin = {"product_id": product["id"], "stock": 1, "group_id": group["id"]}
    assert error_of(await shop.call("POST", "/api/flash-sales", "member", json=not_admin)) == (
        403,
        "forbidden",
    )
    sale = await shop.sale(group_id=group["id"])
    assert error_of(await shop.reserve(sale["id"], "outsider")) == (403, "not_member")
    assert await shop.remaining(sale["id"]) == 5
    assert (await shop.reserve(sale["id"], "member", source="group")).status_code == 201
    assert await shop.remaining(sale["id"]) == 4


async def test_reconcile_needs_the_api_key_and_keeps_stock(shop: Shop) -> None:
    sale = await shop.sale(stock=5)
    await shop.reserve(sale["id"], "a", quantity=2)
    path = f"/api/flash-sales/{sale['id']}/reconcile"
    assert error_of(await shop.call("POST", path)) == (401, "unauthorized")
    body = await shop.ok("POST", path, headers={"x-api-key": API_KEY})
    assert (body["remaining"], body["holds"], body["generation"]) == (3, 1, 2)
    assert await shop.remaining(sale["id"]) == 3


def fast_rejects(shop: Shop) -> float:
    value = shop.core.metrics.registry.get_sample_value("livemart_reservation_fast_rejects_total")
    return value or 0.0


async def test_sold_out_fast_path_keeps_replays_and_learns_of_returns(shop: Shop) -> None:
    sale = await shop.sale(stock=1, per_user_limit=1)
    first = (await shop.reserve(sale["id"], "a", key="K")).json()
    assert error_of(await shop.reserve(sale["id"], "b")) == (409, "sold_out")
    for _ in range(50):  # the flag's list of known keys is fetched in the background
        if fast_rejects(shop):
            break
        assert error_of(await shop.reserve(sale["id"], "b")) == (409, "sold_out")
        await asyncio.sleep(0.02)
    before = fast_rejects(shop)
    for _ in range(10):
        assert error_of(await shop.reserve(sale["id"], "c")) == (409, "sold_out")
    assert fast_rejects(shop) - before >= 9  # at most one probe per 100 ms reaches the ledger
    replay = await shop.reserve(sale["id"], "a", key="K")  # a known key still replays
    assert (replay.status_code, replay.json()["id"]) == (201, first["id"])
    await shop.ok("DELETE", f"/api/reservations/{first['id']}", "a")
    assert (await shop.reserve(sale["id"], "c")).status_code == 201  # the flag dropped at once


@dataclass
class Caller:
    identity: Identity


async def test_ws_op_refuses_a_known_sell_out_without_waiting(shop: Shop) -> None:
    """The `reserve` op answers a sell-out this process knows of at once (no coroutine,
    so the gateway needs no task); a members-only sale still says not_member first."""
    reserve = reserve_op(shop.commerce.checkout, shop.commerce.settings)
    group = await shop.ok("POST", "/api/groups", "merchant", json={"name": "Fans"})
    public = await shop.sale(stock=1, per_user_limit=1)
    members = await shop.sale(stock=1, per_user_limit=1, group_id=group["id"])
    assert (await shop.reserve(public["id"], "merchant")).status_code == 201
    assert (await shop.reserve(members["id"], "merchant")).status_code == 201

    def start(sale_id: str, user: str) -> Any:
        session = cast(Session, Caller(Identity(user, user)))
        return reserve(session, Args({"sale": sale_id, "key": f"k-{next(_keys)}"}))

    async def outcome(sale_id: str, user: str) -> str:
        try:
            pending = start(sale_id, user)
        except ProtocolError as exc:
            return f"at once: {exc.code}"
        try:
            await pending
        except ProtocolError as exc:
            return f"waited: {exc.code}"
        return "held"

    assert await outcome(public["id"], "b") == "waited: sold_out"  # the ledger tells it first
    assert await outcome(members["id"], "outsider") == "waited: not_member"
    assert await outcome(members["id"], "merchant") == "waited: sold_out"
    for _ in range(50):  # the flag's list of known keys arrives in the background
        if (await outcome(public["id"], "b")).startswith("at once"):
            break
        await asyncio.sleep(0.02)
    assert await outcome(public["id"], "c") == "at once: sold_out"
    assert await outcome(members["id"], "outsider") == "waited: not_member"  # flagged too


async def test_a_replay_of_a_hold_whose_row_never_landed_fences_it_and_holds_again(shop: Shop) -> None:
    """A process died between the ledger and SQL: the hold is in the ledger, its row is not.
    The buyer's retry with the same key must not wait for the hold's deadline (minutes):
    after `replay_wait_s` it is fenced out with a void row and the buyer holds again."""
    sale = await shop.sale(stock=5, per_user_limit=1)
    ledger = shop.commerce.catalog.ledger
    orphan = Attempt(sale["id"], "orphan-reservation", "a", 1, "K", now_ms())
    assert (await ledger.reserve(orphan)).outcome is Outcome.HELD
    assert await shop.remaining(sale["id"]) == 4
    started = time.monotonic()
    retry = await shop.reserve(sale["id"], "a", key="K")
    assert retry.status_code == 201, retry.text
    assert retry.json()["id"] != "orphan-reservation"
    assert time.monotonic() - started < 10
    assert await shop.remaining(sale["id"]) == 4  # the orphan's unit came back, the new hold took it
    again = await shop.reserve(sale["id"], "a", key="K")
    assert (again.status_code, again.json()["id"]) == (201, retry.json()["id"])
    async with shop.core.db.begin() as conn:
        statuses = dict(
            (await conn.execute(sa.select(reservations.c.id, reservations.c.status).where(
                reservations.c.sale_id == sale["id"]))).all()
        )  # fmt: skip
    assert statuses == {"orphan-reservation": "void", retry.json()["id"]: "held"}


async def test_start_up_check_rebuilds_stale_ledger_state(shop: Shop) -> None:
    """A ledger behind SQL's generation, or with fewer units out than SQL (Redis restored
    from an old snapshot), is rebuilt by the check that runs on start-up."""
    sale = await shop.sale(stock=5, per_user_limit=2)
    await shop.reserve(sale["id"], "a", quantity=2)
    await shop.reserve(sale["id"], "b")
    reconciler = shop.commerce.reconciler
    assert await reconciler.check_open_sales() == 0  # healthy: nothing to do
    async with shop.core.db.begin() as conn:  # a rebuild that died after its SQL step
        await conn.execute(sa.update(sales).where(sales.c.id == sale["id"]).values(generation=7))
    assert await reconciler.check_open_sales() == 1
    level = await shop.commerce.catalog.level(sale["id"])
    assert level is not None and (level.generation, level.remaining) == (8, 2)
    if shop.core.redis is not None:  # the ledger forgets the holds but keeps its generation
        state = SaleKeys(shop.core.settings.redis_prefix, sale["id"]).state
        await shop.core.redis.hset(state, "r", 5)
        assert await shop.remaining(sale["id"]) == 5
        assert await reconciler.check_open_sales() == 1
    assert await shop.remaining(sale["id"]) == 2
    assert (await shop.reserve(sale["id"], "c")).status_code == 201
    assert await shop.remaining(sale["id"]) == 1


async def test_sql_never_records_more_than_stock(shop: Shop) -> None:
    """Redis restored from an old snapshot over-counts stock while processes run: the
    ledger grants too much, SQL refuses the excess and the ledger is rebuilt."""
    if shop.core.redis is None:
        pytest.skip("the in-process ledger cannot come back from an old snapshot")
    sale = await shop.sale(stock=5, per_user_limit=1)
    for user in ("a", "b", "c"):
        assert (await shop.reserve(sale["id"], user)).status_code == 201
    state = SaleKeys(shop.core.settings.redis_prefix, sale["id"]).state
    await shop.core.redis.hset(state, "r", 5)  # as it was before the three holds
    answers = [await shop.reserve(sale["id"], user) for user in ("d", "e", "f", "g")]
    assert [r.status_code for r in answers] == [201, 201, 409, 409]
    assert {error_of(r) for r in answers[2:]} == {(409, "sold_out")}
    async with shop.core.db.begin() as conn:
        units = await conn.scalar(
            sa.select(sa.func.sum(reservations.c.quantity)).where(reservations.c.sale_id == sale["id"])
        )
    assert units == 5
    assert await shop.remaining(sale["id"]) == 0
    assert shop.core.metrics.registry.get_sample_value(
        "livemart_reservation_undone_total", {"reason": "over_stock"}
    )
