"""Security properties of the HTTP and WebSocket surfaces, as docs/security.md lists them.

The endpoint lists come from the OpenAPI document (livemart/openapi.py), which
tests/test_openapi.py keeps equal to the app's routes: an endpoint added later is
covered here without anyone remembering to add it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from commerce import CommerceSettings
from livemart import openapi
from livemart.app import STATIC_DIR, assemble
from realtime.config import Settings
from rooms.groups import GroupSettings
from rooms.groups.namespace import MAX_ID, parse_group_id
from rooms.live import RoomSettings
from tests.processes import TEST_API_KEY, TEST_SECRET, ProcessGroup, token
from tests.wsclient import WsClient, WsClosed, WsError

SECRET = "security-test-secret-0123456789abcdef-xyz"
API_KEY = "security-test-api-key"

SPEC = openapi.document(
    rooms=RoomSettings(), groups=GroupSettings(), shop=CommerceSettings(), max_body_bytes=65536
)


def operations(security: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(method, path template) of every operation with that security."""
    return sorted(
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method, op in item.items()
        if op["security"] == security
    )


USER_OPS = operations(openapi.USER)
BACKEND_OPS = operations(openapi.BACKEND)
GROUP_OPS = [(method, path) for method, path in USER_OPS if "{group_id}" in path]


def fill(path: str, **values: str) -> str:
    """A concrete path: each ``{name}`` from ``values``, else a plausible id."""
    defaults = {"room_id": "1", "group_id": "1", "seq": "1", "user_id": "someone", "code": "c0de"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], defaults.get(m[1], "x1")), path)


@dataclass
class Api:
    http: httpx.AsyncClient

    def auth(self, user: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token(user, user.title(), SECRET)}"}

    async def call(self, method: str, path: str, user: str | None = None, **kw: Any) -> httpx.Response:
        headers = {**(self.auth(user) if user else {}), **kw.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, user: str, **kw: Any) -> Any:
        response = await self.call(method, path, user, **kw)
        assert response.status_code < 300, (method, path, response.text)
        return response.json()


def error_of(response: httpx.Response) -> tuple[int, str]:
    """Status and code, after checking the body is exactly the contract's error shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def running_app(settings: Settings) -> AsyncIterator[Api]:
    assembly = assemble(settings)
    await assembly.core.migrate(assembly.modules)
    app = assembly.app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as http:
            yield Api(http)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'security.db'}", secret=SECRET, api_key=API_KEY
    )
    async for running in running_app(settings):
        yield running


# --- tokens on every HTTP path ----------------------------------------------------------


def _signed(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


BAD_CREDENTIALS: dict[str, Callable[[], dict[str, str]]] = {
    "missing": lambda: {},
    "forged": lambda: {"authorization": f"Bearer {token('victim', 'V', 'another-secret-' + 'x' * 32)}"},
    "expired": lambda: {"authorization": f"Bearer {token('victim', 'V', SECRET, ttl=-30)}"},
    "alg-none": lambda: {
        "authorization": "Bearer "
        + jwt.encode({"sub": "victim", "exp": int(time.time()) + 60}, None, algorithm="none")
    },
    "no-sub": lambda: {"authorization": f"Bearer {_signed({'exp': int(time.time()) + 60})}"},
    "no-exp": lambda: {"authorization": f"Bearer {_signed({'sub': 'victim'})}"},
    "garbage": lambda: {"authorization": "Bearer not.a.token"},
    "basic-scheme": lambda: {"authorization": "Basic dmljdGltOnB3"},
}


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS, ids=list(BAD_CREDENTIALS))
async def test_every_user_endpoint_refuses_a_missing_or_bad_token(api: Api, credentials: str) -> None:
    assert len(USER_OPS) >= 25
    headers = BAD_CREDENTIALS[credentials]()
    wrong = []
    for method, path in USER_OPS:
        response = await api.http.request(method, fill(path), headers=headers, json={})
        if response.status_code != 401 or error_of(response) != (401, "unauthorized"):
            wrong.append(f"{method} {path} -> {response.status_code} {response.text[:100]}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("credentials", ["forged", "expired", "alg-none", "garbage", "basic-scheme"])
async def test_a_bad_token_is_refused_even_where_guests_are_welcome(api: Api, credentials: str) -> None:
    """A guest may read a room, but a broken token is an error, not a silent downgrade."""
    room = await api.ok("POST", "/api/rooms", "host", json={"title": "open"})
    response = await api.http.get(f"/api/rooms/{room['id']}", headers=BAD_CREDENTIALS[credentials]())
    assert error_of(response) == (401, "unauthorized")
    assert (await api.http.get(f"/api/rooms/{room['id']}")).status_code == 200


async def test_backend_endpoints_need_the_api_key_not_a_user_token(api: Api) -> None:
    assert {path for _, path in BACKEND_OPS} == {"/api/publish", "/api/flash-sales/{sale_id}/reconcile"}
    body = {"channel": "room:1", "event": "notice", "data": {}}
    for method, path in BACKEND_OPS:
        for headers in ({}, {"x-api-key": API_KEY + "x"}, {"x-api-key": ""}, api.auth("admin")):
            response = await api.http.request(method, fill(path), headers=headers, json=body)
            assert error_of(response) == (401, "unauthorized"), (method, path, headers)


async def test_backend_endpoints_do_not_exist_without_a_configured_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'nokey.db'}", secret=SECRET)
    async for running in running_app(settings):
        for method, path in BACKEND_OPS:
            response = await running.http.request(method, fill(path), headers={"x-api-key": ""}, json={})
            assert error_of(response) == (404, "not_found"), (method, path)


# --- what one user may do to another's things -------------------------------------------


async def test_users_cannot_act_on_each_others_rooms_sales_reservations_or_groups(api: Api) -> None:
    room = (await api.ok("POST", "/api/rooms", "alice", json={"title": "Alice live"}))["id"]
    product = await api.ok(
        "POST", "/api/products", "alice", json={"title": "Tea", "price_cents": 100, "currency": "EUR"}
    )
    await api.ok("POST", f"/api/rooms/{room}/pin", "alice", json={"product_id": product["id"]})
    for method, path, body in (
        ("POST", f"/api/rooms/{room}/end", None),
        ("POST", f"/api/rooms/{room}/pin", {"product_id": product["id"]}),
        ("DELETE", f"/api/rooms/{room}/pin", None),
        ("GET", f"/api/rooms/{room}/stats", None),
        ("POST", "/api/flash-sales", {"product_id": product["id"], "stock": 5}),
    ):
        assert error_of(await api.call(method, path, "mallory", json=body)) == (403, "forbidden"), path

    sale = await api.ok("POST", "/api/flash-sales", "alice", json={"product_id": product["id"], "stock": 5})
    held = await api.ok(
        "POST", f"/api/flash-sales/{sale['id']}/reservations", "bob", headers={"idempotency-key": "k1"}
    )
    for method, path in (
        ("POST", f"/api/reservations/{held['id']}/confirm"),
        ("DELETE", f"/api/reservations/{held['id']}"),
    ):
        assert error_of(await api.call(method, path, "mallory")) == (403, "forbidden"), path
    # Mallory's use of Bob's key is her own reservation, not a replay of his.
    mine = await api.ok(
        "POST", f"/api/flash-sales/{sale['id']}/reservations", "mallory", headers={"idempotency-key": "k1"}
    )
    assert mine["id"] != held["id"]
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}", "bob"))["remaining"] == 3
    order = await api.ok("POST", f"/api/reservations/{held['id']}/confirm", "bob")
    assert [o["id"] for o in (await api.ok("GET", "/api/orders", "mallory"))["orders"]] == []
    assert [o["id"] for o in (await api.ok("GET", "/api/orders", "bob"))["orders"]] == [order["order"]["id"]]

    group = (await api.ok("POST", "/api/groups", "alice", json={"name": "VIP"}))["id"]
    await api.ok(
        "POST", f"/api/groups/{group}/messages", "alice", json={"text": "secret", "client_msg_id": "m1"}
    )
    refused = []
    for method, path in GROUP_OPS:
        body = {"text": "hi", "client_msg_id": "x", "seq": 1, "muted": True, "role": "admin", "seconds": 5}
        response = await api.call(
            method, fill(path, group_id=str(group), user_id="alice"), "mallory", json=body
        )
        if error_of(response) != (403, "not_member"):
            refused.append(f"{method} {path} -> {response.status_code} {response.text[:80]}")
    assert not refused, "\n".join(refused)
    page = await api.ok("GET", f"/api/groups/{group}/messages", "alice")
    assert [m["text"] for m in page["messages"]] == ["secret"]
    assert (await api.ok("GET", "/api/me/groups", "mallory"))["groups"] == []

    # A merchant sells only her own products, and only in rooms she hosts or groups she runs.
    own = await api.ok(
        "POST", "/api/products", "mallory", json={"title": "Fake", "price_cents": 1, "currency": "EUR"}
    )
    for where in ({"room_id": room}, {"group_id": group}):
        body = {"product_id": own["id"], "stock": 5, **where}
        assert error_of(await api.call("POST", "/api/flash-sales", "mallory", json=body)) == (
            403,
            "forbidden",
        )
    assert (await api.ok("GET", f"/api/rooms/{room}", "alice"))["sales"] == []


# --- ids that cannot be stored (fixed: they used to answer 500) ---------------------------


@pytest.mark.parametrize("huge", [2**63, 10**30], ids=["int64-overflow", "30-digits"])
async def test_group_ids_too_large_to_store_are_not_found(api: Api, huge: int) -> None:
    wrong = []
    for method, path in GROUP_OPS:
        body = {"text": "hi", "client_msg_id": "x", "seq": 1, "muted": True, "role": "admin", "seconds": 5}
        response = await api.call(method, fill(path, group_id=str(huge)), "alice", json=body)
        if error_of(response) != (404, "not_found"):
            wrong.append(f"{method} {path} -> {response.status_code} {response.text[:80]}")
    assert not wrong, "\n".join(wrong)


async def test_a_recall_of_an_unstorable_seq_cannot_fail_other_members_sends(api: Api) -> None:
    """Sends are written in shared batches: one bad draft used to fail the whole batch."""
    group = (await api.ok("POST", "/api/groups", "alice", json={"name": "Batch"}))["id"]
    recalls = [api.call("DELETE", f"/api/groups/{group}/messages/{2**63 + n}", "alice") for n in range(3)]
    sends = [
        api.call(
            "POST", f"/api/groups/{group}/messages", "alice", json={"text": f"m{n}", "client_msg_id": f"c{n}"}
        )
        for n in range(5)
    ]
    answers = await asyncio.gather(*recalls, *sends)
    refused, sent = answers[: len(recalls)], answers[len(recalls) :]
    assert [r.status_code for r in sent] == [201] * 5, [r.text for r in sent]
    assert {error_of(r) for r in refused} == {(404, "not_found")}


def test_group_ids_are_bounded_ascii_digits_or_integers() -> None:
    assert parse_group_id("42") == 42 and parse_group_id(42) == 42
    assert parse_group_id(MAX_ID) == MAX_ID
    for bad in (MAX_ID + 1, 2**63, 0, -1, True, "²", "١٢", "", "1e3", "0", "9" * 19, None, 1.0):
        assert parse_group_id(bad) is None, bad


async def test_ws_group_ops_refuse_unstorable_ids(livemart: ProcessGroup) -> None:
    server = livemart()
    async with await WsClient.connect(server.ws_url, token=token("alice", "Alice", TEST_SECRET)) as ws:
        for ch in ("group:²", f"group:{2**63}"):
            with pytest.raises(WsError) as refused:
                await ws.call("subscribe", ch=ch)
            assert refused.value.code in ("bad_request", "not_member"), (ch, refused.value.code)
        with pytest.raises(WsError) as refused:
            await ws.call("group.send", group=2**63, text="x", client_msg_id="c")
        assert refused.value.code == "bad_request"
        assert "t" in await ws.call("ping")
    assert "Traceback" not in server.log_text()


# --- request size and shape -----------------------------------------------------------------


async def test_bodies_over_the_limit_are_refused_with_or_without_a_length(api: Api) -> None:
    big = b'{"title": "' + b"x" * 70_000 + b'"}'
    declared = await api.call("POST", "/api/rooms", "alice", content=big)
    assert error_of(declared) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = await api.call("POST", "/api/rooms", "alice", content=chunks())
    assert "content-length" not in streamed.request.headers
    assert error_of(streamed) == (413, "too_large")


@pytest.mark.parametrize(
    "content",
    [b"[" * 60_000, b"not json", b'"a string"', b"[1, 2]", b"\xff\xfe", b'{"title": 5}', b'{"title": null}'],
    ids=["deep-nesting", "not-json", "string", "array", "not-utf8", "wrong-type", "null"],
)
async def test_malformed_bodies_are_bad_requests(api: Api, content: bytes) -> None:
    response = await api.call("POST", "/api/rooms", "alice", content=content)
    assert error_of(response) == (400, "bad_request")


async def test_sql_metacharacters_are_data(api: Api) -> None:
    """Queries are parameterized: quotes and comments are stored and read back verbatim."""
    hostile = "Robert'); DROP TABLE chat_groups; --"
    group = await api.ok("POST", "/api/groups", "alice", json={"name": hostile})
    assert (await api.ok("GET", f"/api/groups/{group['id']}", "alice"))["name"] == hostile
    room = await api.ok("POST", "/api/rooms", "alice", json={"title": hostile})
    assert (await api.ok("GET", f"/api/rooms/{room['id']}", "alice"))["title"] == hostile
    for path in ("/api/products/' OR '1'='1", "/api/flash-sales/1 OR 1=1", "/api/products/%27%3B--"):
        assert error_of(await api.call("GET", path)) == (404, "not_found"), path


# --- browsers: CORS, and markup from users ----------------------------------------------------


async def test_no_cors_headers_unless_origins_are_configured(api: Api) -> None:
    preflight = await api.http.options(
        "/api/rooms",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    read = await api.http.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in read.headers


async def test_cors_allows_only_the_configured_origins_and_never_credentials(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cors.db'}",
        secret=SECRET,
        allowed_origins=("https://shop.example",),
    )
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async for running in running_app(settings):
        allowed = await running.http.options("/api/rooms", headers={"Origin": "https://shop.example", **ask})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert "access-control-allow-credentials" not in allowed.headers
        refused = await running.http.options("/api/rooms", headers={"Origin": "https://evil.example", **ask})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


def test_the_web_client_never_parses_strings_as_markup() -> None:
    """Names, comments and titles reach the page as text nodes (dom.js): no API that
    turns a string into HTML or code may appear in the client."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert len(scripts) >= 10
    found = [f"{path.name}:{n}" for path in scripts for n, line in enumerate(path.read_text().splitlines(), 1)
             if sinks.search(line) and not line.lstrip().startswith(("*", "//"))]  # fmt: skip
    assert not found


# --- secrets stay out of logs -------------------------------------------------------------------


async def test_tokens_secret_and_api_key_never_reach_the_log(livemart: ProcessGroup) -> None:
    server = livemart()  # --log-level info, the default
    user_token = token("logged", "Logged", TEST_SECRET)
    forged = token("logged", "Logged", "not-the-secret-" + "y" * 32)
    bearer = {"authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        room = (await http.post("/api/rooms", headers=bearer, json={"title": "logged"})).json()["id"]
    async with await WsClient.connect(server.ws_url, token=user_token) as ws:
        await ws.call("subscribe", ch=f"room:{room}")
        await ws.call("comment", room=room, text="hello")
        with pytest.raises(WsError):
            await ws.call("subscribe", ch="group:1")
    refused = await WsClient.connect(server.ws_url, token=forged)
    with pytest.raises(WsClosed):
        await refused.call("ping")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/api/me/groups", headers=bearer)).status_code == 200
        assert (
            await http.get("/api/me/groups", headers={"authorization": f"Bearer {forged}"})
        ).status_code == 401
        published = await http.post(
            "/api/publish",
            headers={"x-api-key": TEST_API_KEY},
            json={"channel": f"room:{room}", "event": "notice", "data": {}},
        )
        assert published.status_code == 200
        assert (
            await http.post("/api/publish", headers={"x-api-key": "wrong-key"}, json={})
        ).status_code == 401
    server.terminate()
    log = server.log_text()
    assert "livemart serving" in log  # the right file, and it has content
    for secret in (user_token, forged, TEST_SECRET, TEST_API_KEY):
        for piece in {secret, *secret.split(".")[1:]}:  # a JWT's payload or signature alone counts too
            assert piece not in log
