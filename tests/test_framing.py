"""The frame splitter: commands cut out exactly, everything else passed on byte for byte.

The splitter runs before websockets' parser; if it ever cut a frame wrong, websockets
would lose its place in the stream. So: random frame sequences, serialized as a client
would (masked), split at random points, must come out frame for frame. The live test
checks what a pure test cannot: a request cut in two, frames in one write, fragments
interleaved with pings, a command arriving a byte at a time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from realtime.framing import FrameSplitter
from tests.processes import TEST_SECRET, ProcessGroup, token

MAX_SIZE = 1000

frames = st.one_of(
    st.builds(lambda data: Frame(Opcode.TEXT, data), st.binary(max_size=300)),
    st.builds(lambda data: Frame(Opcode.BINARY, data), st.binary(max_size=300)),
    st.builds(lambda data: Frame(Opcode.PING, data), st.binary(max_size=125)),
    st.builds(lambda data: Frame(Opcode.TEXT, data, fin=False), st.binary(max_size=50)),
    st.builds(lambda data: Frame(Opcode.CONT, data), st.binary(max_size=50)),
    st.builds(lambda data: Frame(Opcode.TEXT, data, rsv1=True), st.binary(max_size=50)),  # unnegotiated
    st.builds(lambda data: Frame(Opcode.TEXT, data), st.binary(min_size=126, max_size=MAX_SIZE)),
)


def wire(frame: Frame) -> bytes:
    """The frame as a client sends it (websockets refuses to write a reserved bit: set here)."""
    data = Frame(frame.opcode, frame.data, frame.fin).serialize(mask=True, extensions=[])
    return bytes([data[0] | 0x40]) + data[1:] if frame.rsv1 else data


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300)
@given(st.lists(frames, max_size=12), st.lists(st.integers(min_value=0), max_size=20))
def test_frames_come_out_whole_and_in_order(sequence: list[Frame], points: list[int]) -> None:
    """Fed as the gateway feeds it (``messages`` false while a fragmented message is
    open), the splitter returns one item per frame, in order: a command frame's payload,
    or any frame's exact bytes. It may pass a command frame raw, never the reverse."""
    splitter = FrameSplitter(Opcode.TEXT.value, MAX_SIZE)
    out: list[tuple[bytes, bool]] = []
    fragment_open = False
    for chunk in cut(b"".join(wire(frame) for frame in sequence), points):
        for data, is_message in splitter.feed(chunk, messages=not fragment_open):
            out.append((data, is_message))
            if not is_message and data[0] & 0x0F in (0, 1, 2) and not data[0] & 0x70:
                fragment_open = not data[0] & 0x80
    assert not splitter.stopped
    assert len(out) == len(sequence)
    fragment_open = False
    for (data, is_message), frame in zip(out, sequence, strict=True):
        if is_message:
            assert frame.opcode is Opcode.TEXT and frame.fin and not frame.rsv1 and not fragment_open
            assert data == frame.data
        else:
            assert data[0] & 0x0F == frame.opcode.value and len(data) == len(wire(frame))
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) and not frame.rsv1:
            fragment_open = not frame.fin


def test_raw_frames_are_the_exact_bytes_sent() -> None:
    sequence = [
        Frame(Opcode.TEXT, b'{"id":1}'),
        Frame(Opcode.PING, b"p"),
        Frame(Opcode.TEXT, b'{"id":', fin=False),
        Frame(Opcode.PING, b"q"),
        Frame(Opcode.CONT, b"2}"),
        Frame(Opcode.BINARY, b"\x81"),
    ]
    raw = [wire(frame) for frame in sequence]
    splitter = FrameSplitter(Opcode.TEXT.value, MAX_SIZE)
    out = splitter.feed(b"".join(raw))
    assert out[0] == (b'{"id":1}', True)
    assert [data for data, _ in out[1:]] == raw[1:]
    assert not any(is_message for _, is_message in out[1:])


def test_a_continuation_stays_raw_when_the_caller_says_a_message_is_open() -> None:
    splitter = FrameSplitter(Opcode.TEXT.value, MAX_SIZE)
    frame = wire(Frame(Opcode.TEXT, b"{}"))
    assert splitter.feed(frame, messages=False) == [(frame, False)]


def test_headers_websockets_must_refuse_stop_the_splitting() -> None:
    for bad in (
        Frame(Opcode.TEXT, b"x" * (MAX_SIZE + 1)).serialize(mask=True, extensions=[]),
        Frame(Opcode.TEXT, b"unmasked").serialize(mask=False, extensions=[]),
    ):
        splitter = FrameSplitter(Opcode.TEXT.value, MAX_SIZE)
        good = wire(Frame(Opcode.TEXT, b"{}"))
        out = splitter.feed(good + bad[:5])
        out += splitter.feed(bad[5:])
        assert out[0] == (b"{}", True)
        assert splitter.stopped
        assert b"".join(data for data, _ in out[1:]) == bad


def test_an_incomplete_frame_is_kept_until_it_completes() -> None:
    splitter = FrameSplitter(Opcode.TEXT.value, MAX_SIZE)
    frame = wire(Frame(Opcode.TEXT, b"y" * 500))
    out: list[tuple[bytes, bool]] = []
    for i in range(len(frame)):
        out += splitter.feed(frame[i : i + 1])
    assert out == [(b"y" * 500, True)]


async def test_live_split_request_fragments_pings_and_byte_by_byte(livemart: ProcessGroup) -> None:
    server = livemart.start(module="tests.coreapp")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?token={token('f', 'F', TEST_SECRET)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: livemart.json\r\n\r\n"
    ).encode()
    first = wire(Frame(Opcode.TEXT, orjson.dumps({"id": 1, "op": "ping"})))
    fragmented = [
        wire(Frame(Opcode.TEXT, b'{"id": 2, ', fin=False)),
        wire(Frame(Opcode.PING, b"between")),
        wire(Frame(Opcode.CONT, b'"op": "ping"}')),
    ]
    slow = wire(Frame(Opcode.TEXT, orjson.dumps({"id": 3, "op": "ping"})))
    try:
        # (uvicorn hands the gateway the request alone: a client must wait for the 101.)
        writer.write(request[:-2])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(request[-2:])
        async with asyncio.timeout(10):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(first + b"".join(fragmented))
            for i in range(len(slow)):
                writer.write(slow[i : i + 1])
                await writer.drain()
            seen: list[object] = []
            while len([s for s in seen if isinstance(s, dict)]) < 3:
                head = await reader.readexactly(2)
                size = head[1] & 0x7F
                if size == 126:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                payload = await reader.readexactly(size)
                if head[0] & 0x0F == Opcode.PONG.value:
                    seen.append(("pong", payload))
                else:
                    seen.append(orjson.loads(payload))
        replies = [s for s in seen if isinstance(s, dict)]
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert all("ok" in r for r in replies)
        assert ("pong", b"between") in seen
    finally:
        writer.close()
        await writer.wait_closed()
