"""Self-tests of the test infrastructure: if these fixtures lied, every other test would too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from tests.processes import TEST_SECRET, ProcessGroup, ServerStartError, server_env, token
from tests.services import (
    BrokerKind,
    database_url_for,
    delete_prefixed,
    postgres_admin_from_env,
    run_sql,
    unique_prefix,
)
from tests.wsclient import JSON, MSGPACK, WsClient, WsClosed, WsError

REPO = Path(__file__).resolve().parent.parent


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture
def after_prefix_cleanup(redis_url: str) -> Iterator[dict[str, str]]:
    """Checks, after `redis_prefix` is torn down, that its keys are gone and others stay.

    Requested before `redis_prefix`, so pytest tears it down after that fixture.
    """
    seen: dict[str, str] = {}
    yield seen
    client = redis.Redis.from_url(redis_url)
    try:
        leftover = list(client.scan_iter(match=f"{seen['prefix']}*"))
        foreign_kept = client.get(seen["foreign"])
        client.delete(seen["foreign"])
    finally:
        client.close()
    if leftover or foreign_kept != b"keep":
        pytest.fail(f"prefix cleanup wrong: leftover={leftover}, foreign={foreign_kept!r}")


def test_redis_prefix_is_cleaned_up_alone(
    after_prefix_cleanup: dict[str, str], redis_url: str, redis_prefix: str
) -> None:
    assert redis_prefix.startswith("lmt:") and redis_prefix.endswith(":")
    foreign = f"{unique_prefix()}other"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        for n in range(1200):  # more than one SCAN page and one delete batch
            client.set(f"{redis_prefix}k{n}", n)
        client.set(foreign, "keep")
        assert client.get(f"{redis_prefix}k7") == b"7"
    finally:
        client.close()
    after_prefix_cleanup.update(prefix=redis_prefix, foreign=foreign)


async def test_redis_usable_from_asyncio(redis_url: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}a", "1")
        assert await client.incr(f"{redis_prefix}a") == 2
    finally:
        await client.aclose()


def test_delete_prefixed_refuses_glob_prefixes(redis_url: str) -> None:
    for bad in ("", "lmt:*", "a?b", "x[1]"):
        with pytest.raises(ValueError):
            delete_prefixed(redis_url, bad)


# --- PostgreSQL and SQLite -------------------------------------------------------------------


async def _scalar(url: str, sql: str) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


@pytest.fixture
def after_database_drop(postgres_admin_url: str) -> Iterator[dict[str, str]]:
    """Checks, after `postgres_url` is torn down, that its database no longer exists."""
    seen: dict[str, str] = {}
    yield seen
    query = f"SELECT count(*) FROM pg_database WHERE datname = '{seen['name']}'"
    if run_sql(postgres_admin_url, query) != 0:
        pytest.fail(f"database {seen['name']} still exists after teardown")


async def test_postgres_database_created_and_dropped(
    after_database_drop: dict[str, str], postgres_url: str
) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    name = await _scalar(postgres_url, "SELECT current_database()")
    assert name.startswith("lmt_") and postgres_url.endswith(f"/{name}")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, v text)"))
            await conn.execute(text("INSERT INTO t VALUES (1, 'one')"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == "one"
    finally:
        await engine.dispose()
    after_database_drop["name"] = name


async def test_sqlite_url_is_a_file_in_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url.startswith("sqlite+aiosqlite:///")
    engine = create_async_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v text)"))
            await conn.execute(text("INSERT INTO t VALUES ('x')"))
    finally:
        await engine.dispose()
    assert await _scalar(sqlite_url, "SELECT v FROM t") == "x"
    assert (tmp_path / "test.db").is_file()


async def test_database_url_covers_each_backend(database_url: str, request: pytest.FixtureRequest) -> None:
    assert await _scalar(database_url, "SELECT 1 + 1") == 2
    is_postgres = database_url.startswith("postgresql+asyncpg://")
    assert (request.node.get_closest_marker("postgres") is not None) == is_postgres


def test_broker_kind_covers_each_broker(broker_kind: BrokerKind, request: pytest.FixtureRequest) -> None:
    assert broker_kind.prefix.startswith("lmt:")
    marked = request.node.get_closest_marker("redis") is not None
    if broker_kind.name == "redis":
        assert broker_kind.redis_url and marked
        client = redis.Redis.from_url(broker_kind.redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
    else:
        assert broker_kind.name == "memory" and broker_kind.redis_url is None and not marked


def test_urls_from_environment_are_normalised() -> None:
    assert postgres_admin_from_env("sqlite+aiosqlite:///x.db") is None
    assert postgres_admin_from_env(None) is None
    url = postgres_admin_from_env("postgresql://postgres@127.0.0.1:5432/test")
    assert url == "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    assert database_url_for(url, "lmt_x") == "postgresql+asyncpg://postgres@127.0.0.1:5432/lmt_x"


# --- LIVEMART_REQUIRE_SERVICES -----------------------------------------------------------------

_SKIPPING_SUITE = """
import pytest

@pytest.fixture
def redis_url():
    return "redis://unused"

def test_needs_redis(redis_url):
    pytest.skip("pretend Redis is down")

def test_plain():
    pass
"""


@pytest.mark.parametrize("required", ["1", "0"])
def test_skipped_service_test_fails_when_services_are_required(tmp_path: Path, required: str) -> None:
    (tmp_path / "test_inner.py").write_text(_SKIPPING_SUITE)
    env = {**os.environ, "LIVEMART_REQUIRE_SERVICES": required, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, "-q", "-rs", str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if required == "1":
        assert done.returncode == 1, done.stdout
        assert "test_inner.py::test_needs_redis" in done.stdout
        assert "LIVEMART_REQUIRE_SERVICES" in done.stdout
    else:
        assert done.returncode == 0, done.stdout


# --- processes and tokens --------------------------------------------------------------------


def test_token_carries_the_contract_claims() -> None:
    signed = token("u1", "Ann", TEST_SECRET, ttl=60)
    claims = jwt.decode(signed, TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["name"] == "Ann"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(signed, "another-secret-of-enough-length-000", algorithms=["HS256"])
    expired = token("u1", "Ann", TEST_SECRET, ttl=-10)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(expired, TEST_SECRET, algorithms=["HS256"])


def test_server_env_comes_from_arguments_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://leaked")
    monkeypatch.setenv("LIVEMART_API_KEY", "leaked")
    env = server_env(
        database_url="sqlite+aiosqlite:///x.db",
        redis_url=None,
        secret="s",
        api_key=None,
        redis_prefix="lmt:p:",
        extra={"EXTRA": "1"},
    )
    assert "REDIS_URL" not in env and "LIVEMART_API_KEY" not in env
    assert env["DATABASE_URL"] == "sqlite+aiosqlite:///x.db"
    assert env["LIVEMART_SECRET"] == "s" and env["LIVEMART_REDIS_PREFIX"] == "lmt:p:"
    assert env["EXTRA"] == "1"


def test_failed_start_reports_the_log_tail(livemart: ProcessGroup) -> None:
    with pytest.raises(ServerStartError) as failure:
        livemart(args=["--no-such-option"], ready_timeout=15)
    message = str(failure.value)
    assert "before it was ready" in message
    assert message.split("Log tail:\n", 1)[1].strip(), "the process's own output is missing"


async def test_livemart_process_serves_and_stops(livemart: ProcessGroup, broker_kind: BrokerKind) -> None:
    server = livemart(redis_url=broker_kind.redis_url, redis_prefix=broker_kind.prefix)
    assert server.url == f"http://127.0.0.1:{server.port}" and server.returncode is None
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        assert (await http.get("/readyz")).status_code == 200
    user = token("u1", "Ann", TEST_SECRET)
    for protocol in (JSON, MSGPACK):
        async with await WsClient.connect(server.ws_url, token=user, protocol=protocol) as ws:
            assert "t" in await ws.call("ping")
    server.terminate()
    assert server.returncode is not None
    second = livemart(redis_url=broker_kind.redis_url, redis_prefix=broker_kind.prefix)
    second.kill()
    assert second.returncode == -signal.SIGKILL


# --- WebSocket client --------------------------------------------------------------------------


async def _contract_peer(ws: ServerConnection) -> None:
    """A stand-in server speaking the contract's frame shapes, enough to drive the client."""
    async for frame in ws:
        request = json.loads(frame)
        if request["op"] == "ping":
            await ws.send(json.dumps({"id": request["id"], "ok": {"t": 1}}))
        elif request["op"] == "fail":
            error = {"code": "forbidden", "message": "no"}
            await ws.send(json.dumps({"id": request["id"], "error": error}))
        elif request["op"] == "burst":
            pushes: list[dict[str, Any]] = [
                {"ch": "room:1", "ev": "comment", "off": n, "data": {}} for n in (1, 2)
            ]
            await ws.send(json.dumps(pushes))
            await ws.send(json.dumps({"ch": "room:1", "ev": "likes", "off": 3, "data": {}}))
            await ws.send(json.dumps({"id": request["id"], "ok": {}}))
        elif request["op"] == "bye":
            await ws.close(4001, "bye")


@pytest.fixture
async def peer_url() -> AsyncIterator[str]:
    def select(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return Subprotocol("livemart.json") if "livemart.json" in offered else None

    server: Server
    async with serve(_contract_peer, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


async def test_ws_client_calls_pushes_and_close(peer_url: str) -> None:
    async with await WsClient.connect(peer_url, token="abc") as client:
        assert client.ws.request is not None and "token=abc" in client.ws.request.path
        assert await client.call("ping") == {"t": 1}
        with pytest.raises(WsError) as error:
            await client.call("fail")
        assert error.value.code == "forbidden"
        await client.call("burst")
        offsets = [p["off"] for p in await client.pushes_until(3, timeout=2)]
        assert offsets == [1, 2, 3]
        with pytest.raises(TimeoutError):
            await client.next_push(timeout=0.2)
        await client.send_raw(json.dumps({"id": 99, "op": "bye"}))
        with pytest.raises(WsClosed):
            await client.next_push(timeout=2)
        assert client.closed_code == 4001


async def test_ws_client_requires_the_asked_subprotocol(peer_url: str) -> None:
    with pytest.raises(WsError) as error:
        await WsClient.connect(peer_url, protocol=MSGPACK)
    assert error.value.code == "bad_subprotocol"
