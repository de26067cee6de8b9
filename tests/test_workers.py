"""``serve --workers N``: several processes on one port, one cluster through Redis."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.processes import TEST_SECRET, ProcessGroup, token
from tests.wsclient import WsClient, WsClosed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_workers_share_the_port_and_the_channels(
    livemart: ProcessGroup, redis_url: str, redis_prefix: str
) -> None:
    server = livemart.start(
        module="tests.coreapp",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        args=["--workers", "2"],
        env={"LIVEMART_SHUTDOWN_TIMEOUT_S": "3"},
    )
    pids = set()
    for _ in range(40):
        async with httpx.AsyncClient() as http:  # a new connection each time
            pids.add((await http.get(f"{server.url}/healthz")).json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2 and server.pid not in pids

    viewers = [await WsClient.connect(server.ws_url) for _ in range(12)]
    for viewer in viewers:
        await viewer.call("subscribe", ch="public:w")
    async with await WsClient.connect(server.ws_url, token=token("p", "P", TEST_SECRET)) as pub:
        await pub.call("publish", ch="public:w", ev="n", data={"x": 1})
    for viewer in viewers:
        assert (await viewer.next_push(timeout=5))["data"] == {"x": 1}

    server.terminate(timeout=15)
    for viewer in viewers:
        with pytest.raises(WsClosed) as info:
            await viewer.call("ping")
        assert info.value.code == 1012  # drained: told to reconnect elsewhere
    await asyncio.sleep(0.5)
    assert not any(alive(pid) for pid in pids)


def test_workers_need_redis(livemart: ProcessGroup) -> None:
    with pytest.raises(Exception, match="needs REDIS_URL"):
        livemart.start(module="tests.coreapp", args=["--workers", "2"], ready_timeout=5)
