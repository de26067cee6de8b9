"""The generator's HTTP client against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loadtest.httpclient import HttpClient, HttpError, HttpTimeout, parse_head

KEEP_ALIVE_S = 1


async def _json(request: Request) -> Response:
    assert request.client is not None
    return JSONResponse({"port": request.client.port, "auth": request.headers.get("authorization")})


async def _echo(request: Request) -> Response:
    return JSONResponse(
        {"body": await request.json(), "key": request.headers.get("x-api-key")}, status_code=201
    )


async def _chunked(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for piece in (b'{"a": ', b"[1, 2, 3]", b', "b": "' + b"x" * 70_000 + b'"}'):
            yield piece

    return StreamingResponse(parts(), media_type="application/json")


async def _refuse(request: Request) -> Response:
    return JSONResponse({"error": {"code": "sold_out", "message": "none left"}}, status_code=409)


async def _slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return JSONResponse({})


APP = Starlette(
    routes=[
        Route("/json", _json),
        Route("/echo", _echo, methods=["POST"]),
        Route("/chunked", _chunked),
        Route("/refuse", _refuse),
        Route("/slow", _slow),
        Route("/empty", lambda request: Response(status_code=204)),
    ]
)


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # clients queue in the backlog until uvicorn accepts: no start-up race
    config = uvicorn.Config(APP, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def test_json_round_trip_with_headers_and_token(server_url: str) -> None:
    client = HttpClient(server_url)
    try:
        response = await client.request("POST", "/echo", json={"x": [1, "é"]}, headers={"X-API-Key": "k1"})
        assert response.status == 201 and response.ok
        assert response.json() == {"body": {"x": [1, "é"]}, "key": "k1"}
        got = (await client.request("GET", "/json", token="t0k")).json()
        assert got["auth"] == "Bearer t0k"
    finally:
        await client.close()


async def test_keep_alive_reuses_one_connection(server_url: str) -> None:
    client = HttpClient(server_url)
    try:
        ports = {(await client.request("GET", "/json")).json()["port"] for _ in range(5)}
        assert len(ports) == 1
        assert client.opened == 1
    finally:
        await client.close()


async def test_concurrent_requests_are_capped_by_the_pool(server_url: str) -> None:
    client = HttpClient(server_url, max_connections=3)
    try:
        responses = await asyncio.gather(*(client.request("GET", "/json") for _ in range(20)))
        assert all(r.status == 200 for r in responses)
        assert client.opened <= 3
    finally:
        await client.close()


async def test_chunked_and_empty_bodies(server_url: str) -> None:
    client = HttpClient(server_url)
    try:
        body = (await client.request("GET", "/chunked")).json()
        assert body["a"] == [1, 2, 3] and len(body["b"]) == 70_000
        empty = await client.request("GET", "/empty")
        assert (empty.status, empty.body) == (204, b"")
        assert (await client.request("GET", "/json")).status == 200  # connection still in sync
        assert client.opened == 1
    finally:
        await client.close()


async def test_error_code_from_contract_errors_and_bare_statuses(server_url: str) -> None:
    client = HttpClient(server_url)
    try:
        assert (await client.request("GET", "/refuse")).error_code() == "sold_out"
        assert (await client.request("GET", "/missing")).error_code() == "http_404"
    finally:
        await client.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced(server_url: str) -> None:
    client = HttpClient(server_url)
    try:
        first = (await client.request("GET", "/json")).json()["port"]
        await asyncio.sleep(KEEP_ALIVE_S * 1.5)  # uvicorn drops the idle keep-alive connection
        second = (await client.request("GET", "/json")).json()["port"]
        assert first != second
        assert client.opened == 2
    finally:
        await client.close()


async def test_timeout_and_refused_connection(server_url: str) -> None:
    client = HttpClient(server_url, timeout=0.2)
    try:
        with pytest.raises(HttpTimeout):
            await client.request("GET", "/slow")
    finally:
        await client.close()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nobody = HttpClient(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpError):
        await nobody.request("GET", "/json")
    await nobody.close()


def test_parse_head() -> None:
    status, headers = parse_head(b"HTTP/1.1 409 Conflict\r\nContent-Length: 12\r\nX-Thing:  a:b ")
    assert status == 409
    assert headers == {"content-length": "12", "x-thing": "a:b"}
    with pytest.raises(HttpError):
        parse_head(b"SSH-2.0-OpenSSH")
    with pytest.raises(HttpError):
        parse_head(b"HTTP/1.1 200 OK\r\nno colon here")
