"""The native load driver (loadtest/native/wsdrive.c): built here, run against a real
`livemart serve` and against a scripted server that splits, fragments and interleaves
frames the way a real one may."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest import native
from tests.processes import TEST_API_KEY, TEST_SECRET, ProcessGroup, token


@pytest.fixture(scope="module")
def wsdrive() -> Path:
    if native.compiler() is None:
        pytest.skip("no C compiler (cc or gcc, or $CC): the native driver cannot be built")
    return native.build()


def now_us() -> int:
    return time.time_ns() // 1000


def wait_ready(proc: subprocess.Popen[str]) -> str:
    """Read the driver's stderr up to its ready line."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(native.READY):
            return line
    raise AssertionError(f"wsdrive ended before it was ready (exit {proc.wait()})")


def finish(proc: subprocess.Popen[str], expected: int) -> dict[str, Any]:
    """Tell a `--control` driver what is owed and read its result."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"expect {expected}\n")
    proc.stdin.flush()
    out = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    result: dict[str, Any] = json.loads(out)
    return result


def test_listen_counts_every_published_marker_per_lane(livemart: ProcessGroup, wsdrive: Path) -> None:
    server = livemart()
    host = {"Authorization": f"Bearer {token('wsd-host', 'Host', TEST_SECRET)}"}
    with httpx.Client(base_url=server.url, timeout=10.0) as api:
        room = api.post("/api/rooms", json={"title": "wsdrive"}, headers=host).json()["id"]
        subscribe = '{"id":%ID%,"op":"subscribe","ch":"room:' + str(room) + '"}'
        command = [str(wsdrive), "listen", "--control", "--url", server.ws_url, "--conns", "3"]
        command += ["--setup", subscribe, "--duration", "30", "--drain", "10"]
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert "connected=3 failed=0" in wait_ready(proc)
            for k in range(200):
                lane, event = ("p", "purchase") if k % 10 == 0 else ("c", "comment")
                data = {
                    "id": f"m{k}",
                    "user_id": "u",
                    "name": "n",
                    "text": f"[lt:{lane}:{now_us()}] hello {k}",
                }
                body = {"channel": f"room:{room}", "event": event, "data": data}
                response = api.post("/api/publish", json=body, headers={"X-API-Key": TEST_API_KEY})
                assert response.is_success, response.text
            result = finish(proc, 600)
    assert result["delivered"] == 600
    assert result["lanes"] == {"comment": 540, "priority": 60, "message": 0}
    assert result["connections"]["connected"] == 3
    assert result["latency_sample"] == {"every": 1, "samples": 600}
    assert 0 <= result["latency_ms"]["p50"] <= result["latency_ms"]["max"] < 30_000
    assert result["errors"] == {}


def test_command_gets_one_reply_per_command_counted_by_outcome(
    livemart: ProcessGroup, wsdrive: Path, tmp_path: Path
) -> None:
    server = livemart()
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(token(f"wsd-{i}", f"user {i}", TEST_SECRET) + "\n" for i in range(4)))
    ops = tmp_path / "ops"
    ops.write_text("ping\nping\nping\nno.such.op\n")  # connection 3 is refused every time
    granted = tmp_path / "ok.jsonl"
    command = [str(wsdrive), "command", "--url", server.ws_url, "--conns", "4", "--tokens", str(tokens)]
    command += [
        "--args",
        str(ops),
        "--setup",
        '{"id":%ID%,"op":"ping"}',
        "--template",
        '{"id":%ID%,"op":"%ARG%"}',
    ]
    command += ["--rate", "20", "--duration", "2", "--drain", "5", "--ok-file", str(granted)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert (result["scheduled"], result["sent"], result["replied"], result["timed_out"]) == (40, 40, 40, 0)
    assert result["outcomes"] == {"ok": 30, "bad_request": 10}
    assert result["errors"] == {}
    replies = [json.loads(line) for line in granted.read_text().splitlines()]
    assert len(replies) == 30 and all("t" in reply["ok"] for reply in replies)
    # Ids rise per connection after the setup command's id 1: ten commands each, ids 2..11.
    assert sorted({reply["id"] for reply in replies}) == list(range(2, 12))


def test_a_refused_setup_fails_the_connection_with_its_code(livemart: ProcessGroup, wsdrive: Path) -> None:
    server = livemart()
    command = [str(wsdrive), "command", "--url", server.ws_url, "--conns", "2"]
    command += ["--setup", '{"id":%ID%,"op":"subscribe","ch":"room:999999"}']
    command += ["--template", '{"id":%ID%,"op":"ping"}', "--rate", "10", "--duration", "1"]
    result = json.loads(
        subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    )
    assert result["connections"]["connected"] == 0
    assert result["errors"] == {"setup_not_found": 2}
    assert result["sent"] == 0


# A scripted server: what a real one may do to a client, all in one connection.


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A server frame (unmasked), with the 7-, 16- or 64-bit length as the size needs."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 65536:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


def read_frame(conn: socket.socket) -> tuple[int, bytes]:
    """One client frame: (opcode, unmasked payload); clients must mask."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    b0, b1 = exactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", exactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", exactly(8))
    mask = exactly(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(n)))
    return b0 & 0x0F, payload


def markers(lane: str, count: int) -> bytes:
    """A JSON array of `count` pushes, each with one marker."""
    stamp = now_us()
    return json.dumps(
        [{"ch": "x", "data": {"text": f"[lt:{lane}:{stamp}] {i}"}} for i in range(count)]
    ).encode()


class ScriptedServer:
    """Accepts one connection, answers its setup command and then sends `MARKERS` markers
    in awkward shapes; records what the client sent back."""

    MARKERS = {"comment": 1 + 100 + 1000, "priority": 1, "message": 1}

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[tuple[int, bytes]] = []
        self.thread = threading.Thread(target=self.serve)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
            self.received.append(read_frame(conn))  # the setup command
            # The reply and a push in one write: several frames per read.
            conn.sendall(frame(1, b'{"id":1,"ok":{}}') + frame(1, markers("c", 1)))
            # A push byte by byte: a frame across many reads.
            for byte in frame(1, markers("p", 1)):
                conn.sendall(bytes([byte]))
            # A fragmented message whose marker straddles the fragments, a ping between them.
            text = markers("m", 1)
            cut = text.index(b"[lt:m:") + 7
            conn.sendall(frame(1, text[:cut], fin=False) + frame(9, b"are you there"))
            conn.sendall(frame(0, text[cut:]))
            # 16-bit and 64-bit payload lengths.
            conn.sendall(frame(1, markers("c", 100)) + frame(1, markers("c", 1000)))
            while True:  # the pong, then the close frame the driver sends as it stops
                opcode, payload = read_frame(conn)
                self.received.append((opcode, payload))
                if opcode == 8:
                    break

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()


def test_listen_reads_split_batched_fragmented_and_control_frames(
    wsdrive: Path, scripted: ScriptedServer
) -> None:
    total = sum(ScriptedServer.MARKERS.values())
    command = [str(wsdrive), "listen", "--url", f"ws://127.0.0.1:{scripted.port}/ws", "--conns", "1"]
    command += ["--setup", '{"id":%ID%,"op":"subscribe","ch":"x"}', "--expect", str(total)]
    command += ["--duration", "20", "--drain", "0"]
    result = json.loads(
        subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    )
    scripted.close()
    assert result["delivered"] == total
    assert result["lanes"] == ScriptedServer.MARKERS
    assert result["latency_sample"]["samples"] == total
    assert result["errors"] == {}
    assert scripted.received[0] == (1, b'{"id":1,"op":"subscribe","ch":"x"}')
    assert (10, b"are you there") in scripted.received  # the ping answered
    assert scripted.received[-1] == (8, struct.pack("!H", 1000))
