"""Codecs, command parsing and the token bucket: pure code, no I/O."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from realtime.codec import JSON, MSGPACK, push_batch
from realtime.commands import Args, CommandError, parse_command
from realtime.errors import ERROR_STATUS, ProtocolError
from realtime.ratelimit import TokenBucket


def parse_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_codec_round_trip_and_framing(codec: object) -> None:
    value = {"id": 3, "ok": {"text": "héllo <b>", "n": [1, 2]}}
    assert codec.loads(codec.dumps(value)) == value  # type: ignore[attr-defined]
    frame = parse_frame(codec.frame(value))  # type: ignore[attr-defined]
    assert frame.opcode is codec.opcode  # type: ignore[attr-defined]
    assert codec.loads(frame.data) == value  # type: ignore[attr-defined]


def test_json_frames_are_text_and_msgpack_binary() -> None:
    assert JSON.opcode is Opcode.TEXT
    assert MSGPACK.opcode is Opcode.BINARY


def test_large_payload_uses_extended_length() -> None:
    value = {"x": "a" * 70_000}
    frame = parse_frame(JSON.frame(value))
    assert orjson.loads(frame.data) == value


@pytest.mark.parametrize("payload", [b"{", b"nope", b"\xff\xfe", b""])
def test_malformed_json_is_bad_request(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        JSON.loads(payload)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", msgpack.packb({1: 2}) + b"\x00"])
def test_malformed_msgpack_is_bad_request(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.loads(payload)
    assert info.value.code == "bad_request"


def test_push_batch_is_object_alone_or_array() -> None:
    one = {"ch": "room:1", "ev": "x", "off": 1, "data": {}}
    assert push_batch([one]) == one
    assert push_batch([one, one]) == [one, one]


@pytest.mark.parametrize(
    ("value", "command_id"),
    [
        ([], 0),
        ({"op": "ping"}, 0),
        ({"id": -1, "op": "ping"}, 0),
        ({"id": True, "op": "x"}, 0),
        ({"id": 2**60, "op": "x"}, 0),
        ({"id": 7}, 7),
        ({"id": 7, "op": ""}, 7),
        ({"id": 7, "op": 5}, 7),
    ],
)
def test_parse_command_rejects_malformed(value: object, command_id: int) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(value)
    assert info.value.command_id == command_id
    assert info.value.error.code == "bad_request"


def test_parse_command_keeps_args() -> None:
    command = parse_command({"id": 4, "op": "comment", "room": "9", "text": "hi"})
    assert (command.id, command.op, command.args["text"]) == (4, "comment", "hi")


def test_args_validate_with_names() -> None:
    args = Args({"s": "abc", "n": 5, "b": True, "o": {"k": 1}, "long": "x" * 10})
    assert args.text("s") == "abc"
    assert args.integer("n", min=1, max=5) == 5
    assert args.opt_integer("missing", 3) == 3
    assert args.obj("o") == {"k": 1}
    for call, code in [
        (lambda: args.text("n"), "bad_request"),
        (lambda: args.integer("b"), "bad_request"),
        (lambda: args.integer("n", max=4), "bad_request"),
        (lambda: args.text("long", max_len=5), "too_large"),
        (lambda: args.obj("s"), "bad_request"),
    ]:
        with pytest.raises(ProtocolError) as info:
            call()
        assert info.value.code == code


def test_every_error_code_has_a_status_and_unknown_codes_are_refused() -> None:
    for code, status in ERROR_STATUS.items():
        assert ProtocolError(code).status == status
    with pytest.raises(ValueError):
        ProtocolError("no_such_code")


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=2, now=0.0)
    assert bucket.take(now=0.0) and bucket.take(now=0.0)
    assert not bucket.take(now=0.0)
    assert bucket.retry_after() == pytest.approx(0.1)
    assert bucket.take(now=0.1)
    assert not bucket.take(now=0.1)
    bucket.refill(now=100.0)
    assert bucket.tokens == 2
