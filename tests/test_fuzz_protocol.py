"""Fuzzing the protocol surface: decoders, command validation, and a live gateway.

Pure layers are driven by hypothesis; the live gateway gets seeded random and mutated
frames, then must still answer everyone.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from realtime.codec import JSON, MSGPACK
from realtime.commands import Args, CommandError, parse_command
from realtime.errors import ProtocolError
from tests.processes import TEST_SECRET, ProcessGroup, token
from tests.wsclient import WsClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_decoders_raise_only_protocol_errors(payload: bytes) -> None:
    for codec in (JSON, MSGPACK):
        try:
            codec.loads(payload)
        except ProtocolError as exc:
            assert exc.code == "bad_request"


@settings(max_examples=400)
@given(json_values)
def test_parse_command_accepts_or_refuses_cleanly(value: object) -> None:
    try:
        command = parse_command(value)
    except CommandError as exc:
        assert exc.error.code == "bad_request" and exc.command_id >= 0
    else:
        assert isinstance(command.id, int) and command.op


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["a", "b", "ch", "since"]), json_values, max_size=4))
def test_argument_getters_raise_only_protocol_errors(values: dict[str, object]) -> None:
    args = Args(values)
    for getter in (
        lambda: args.text("a"),
        lambda: args.opt_text("b"),
        lambda: args.integer("a", min=0, max=10),
        lambda: args.opt_integer("b"),
        lambda: args.obj("since", optional=True),
    ):
        try:
            getter()
        except ProtocolError as exc:
            assert exc.code in {"bad_request", "too_large"}


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.7:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif data:
            del data[rng.randrange(len(data))]
    return bytes(data)


SEEDS = [
    {"id": 1, "op": "subscribe", "ch": "public:fuzz", "since": {"off": 0, "epoch": "x"}},
    {"id": 2, "op": "publish", "ch": "public:fuzz", "ev": "n", "data": {"k": [1, 2]}},
    {"id": 3, "op": "unsubscribe", "ch": "public:fuzz"},
    {"id": 4, "op": "ping"},
]


async def test_live_gateway_survives_mutated_frames(livemart: ProcessGroup) -> None:
    env = {"LIVEMART_COMMAND_RATE": "100000", "LIVEMART_COMMAND_BURST": "100000"}
    server = livemart.start(module="tests.coreapp", env=env)
    rng = random.Random(20261123)
    user = token("fuzzer", "F", TEST_SECRET)
    for protocol, codec_dumps in (("livemart.json", orjson.dumps), ("livemart.msgpack", msgpack.packb)):
        async with await WsClient.connect(server.ws_url, token=user, protocol=protocol) as client:
            for _ in range(1500):
                frame = mutate(rng, codec_dumps(rng.choice(SEEDS)))
                if protocol == "livemart.json":
                    await client.ws.send(frame.decode("utf-8", errors="replace"))
                else:
                    await client.ws.send(frame)
            # Fuzzed ids collide with the client's own; ask with an id no seed uses.
            await client.send_raw(client.encode({"id": 10**9, "op": "ping"}))
            pushes = await client.pushes_until(lambda push: push.get("id") == 10**9, timeout=20)
            assert "ok" in pushes[-1]
    async with await WsClient.connect(server.ws_url) as bystander:
        assert "t" in await bystander.call("ping")
    assert server.returncode is None


async def test_garbage_after_handshake_is_a_protocol_error_not_a_crash(livemart: ProcessGroup) -> None:
    server = livemart.start(module="tests.coreapp")
    rng = random.Random(7)
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        garbage = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        if rng.random() < 0.5:  # sometimes a valid frame header with a lying length
            garbage = Frame(Opcode.TEXT, b"{}").serialize(mask=True, extensions=[])[:2] + garbage
        writer.write(garbage)
        writer.write_eof()
        async with asyncio.timeout(10):
            await reader.read()  # the server closes; it never hangs
        writer.close()
    async with await WsClient.connect(server.ws_url) as client:
        assert "t" in await client.call("ping")
    assert server.returncode is None
