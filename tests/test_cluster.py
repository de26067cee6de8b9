"""Several real processes on one Redis: cross-process delivery, order, Redis restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.processes import TEST_API_KEY, TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.services import RedisServer
from tests.wsclient import MSGPACK, WsClient, WsClosed, WsError

UNLIMITED = {"LIVEMART_COMMAND_RATE": "1000000", "LIVEMART_COMMAND_BURST": "1000000"}


def start_pair(
    livemart: ProcessGroup, redis_url: str, prefix: str, env: dict[str, str] | None = None
) -> tuple[LivemartProcess, LivemartProcess]:
    def one() -> LivemartProcess:
        return livemart.start(module="tests.coreapp", redis_url=redis_url, redis_prefix=prefix, env=env)

    return one(), one()


@pytest.mark.slow
async def test_order_kept_across_processes_for_json_and_msgpack(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str
) -> None:
    a, b = start_pair(livemart, redis_url, redis_prefix, UNLIMITED)
    total = 10_000
    async with (
        await WsClient.connect(b.ws_url, timeout=60) as js,
        await WsClient.connect(b.ws_url, protocol=MSGPACK, timeout=60) as mp,
        await WsClient.connect(a.ws_url, token=token("pub", "Pub", TEST_SECRET), timeout=60) as pub,
    ):
        await js.call("subscribe", ch="public:order")
        await mp.call("subscribe", ch="public:order")
        for start in range(0, total, 200):  # stay under the per-connection command queue bound
            await asyncio.gather(
                *(
                    pub.call("publish", ch="public:order", ev="n", data={"i": i, "s": "é"})
                    for i in range(start, start + 200)
                )
            )
        for client in (js, mp):
            pushes = await client.pushes_until(total, timeout=60)
            assert [p["data"]["i"] for p in pushes] == list(range(total))
            offsets = [p["off"] for p in pushes]
            assert offsets == list(range(offsets[0], offsets[0] + total))
            assert all(p["data"]["s"] == "é" and p["ch"] == "public:order" for p in pushes)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, so it can be restarted without touching anyone else's."""
    server = RedisServer()
    yield server
    server.stop()


async def wait_until(check: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_processes_recover_after_redis_restart(
    livemart: ProcessGroup, private_redis: RedisServer
) -> None:
    a, b = start_pair(livemart, private_redis.url, "lm:")
    viewer = await WsClient.connect(b.ws_url)
    first = await viewer.call("subscribe", ch="public:live")
    http = httpx.AsyncClient(headers={"X-API-Key": TEST_API_KEY}, timeout=5)

    async def publish(server: LivemartProcess, n: int) -> httpx.Response:
        body = {"channel": "public:live", "event": "n", "data": {"n": n}}
        return await http.post(f"{server.url}/api/publish", json=body)

    assert (await publish(a, 1)).status_code == 200
    assert (await viewer.next_push(timeout=5))["data"] == {"n": 1}

    port = private_redis.port
    private_redis.stop()
    down = await publish(a, 2)
    assert (down.status_code, down.json()["error"]["code"]) == (503, "unavailable")
    assert (await http.get(f"{a.url}/readyz")).status_code == 503

    restarted = RedisServer(port=port)
    try:
        for server in (a, b):

            async def ready(server: LivemartProcess = server) -> bool:
                return (await http.get(f"{server.url}/readyz")).status_code == 200

            await wait_until(ready)
        # Redis came back empty: history and epoch are gone, so B tells its subscriber to resync.
        with pytest.raises(WsClosed) as info:
            while True:
                await viewer.next_push(timeout=15)
        assert info.value.code == 4011

        async with await WsClient.connect(b.ws_url) as again:
            since = {"off": first["off"] + 1, "epoch": first["epoch"]}
            reply = await again.call("subscribe", ch="public:live", since=since)
            assert reply["recovered"] is False and reply["epoch"] != first["epoch"]

            async def delivered() -> bool:
                await publish(a, 3)
                try:
                    push = await again.next_push(timeout=0.5)
                except TimeoutError:
                    return False
                return bool(push["data"] == {"n": 3})

            await wait_until(delivered)
    finally:
        await http.aclose()
        restarted.stop()


@pytest.mark.slow
async def test_publish_during_outage_is_reported_not_lost_silently(
    livemart: ProcessGroup, private_redis: RedisServer
) -> None:
    (a, _) = start_pair(livemart, private_redis.url, "lm:")
    async with await WsClient.connect(a.ws_url, token=token("u", "U", TEST_SECRET)) as client:
        private_redis.stop()
        with pytest.raises(WsError) as info:
            await client.call("publish", ch="public:x", ev="n")
        assert info.value.code == "unavailable"
