"""Counting deliveries from raw frames: one push, batched arrays, both encodings."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from loadtest import frames, markers
from loadtest.frames import BadFrame, Protocol


def _push(text: str, off: int = 1) -> dict[str, Any]:
    return {
        "ch": "room:7",
        "ev": "comment",
        "off": off,
        "data": {"id": "c1", "user_id": "u1", "name": "Ann", "text": text, "ts": 1.5},
    }


def _frame(protocol: Protocol, value: Any) -> bytes:
    """What a server sends: one push object or an array of them."""
    return orjson.dumps(value) if protocol == "json" else msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_a_single_push_counts_once(protocol: Protocol) -> None:
    marker = markers.make("comment", 1_700_000_000_123_456)
    assert markers.scan(_frame(protocol, _push(f"{marker} hello"))) == [("comment", 1_700_000_000_123_456)]


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_an_array_frame_counts_every_push(protocol: Protocol) -> None:
    pushes = [_push(markers.make("comment", 1_000 + i), off=i) for i in range(16)]
    pushes.insert(5, {"ch": "room:7", "ev": "viewers", "off": 99, "data": {"count": 3}})
    pushes.append(
        {
            "ch": "room:7",
            "ev": "purchase",
            "off": 100,
            "data": {"product_title": markers.make("priority", 77)},
        }
    )
    hits = markers.scan(_frame(protocol, pushes))
    assert len(hits) == 17
    assert hits[:16] == [("comment", 1_000 + i) for i in range(16)]
    assert hits[16] == ("priority", 77)


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_frames_without_markers_count_nothing(protocol: Protocol) -> None:
    assert (
        markers.scan(_frame(protocol, {"ch": "room:7", "ev": "likes", "off": 3, "data": {"total": 9}})) == []
    )
    assert markers.scan(_frame(protocol, {"id": 4, "ok": {"off": 12}})) == []


def test_a_look_alike_does_not_count() -> None:
    # Incomplete, wrong lane letter, or not digits: none of these is a marker.
    text = "[lt:c:] [lt:x:123] [lt:c:12a] lt:c:123] [lt:c:123"
    assert markers.scan(frames.encode("json", _push(text))) == []


def test_quotes_in_text_cannot_break_a_marker() -> None:
    marker = markers.make("message", 42)
    frame = frames.encode("json", _push(f'"{marker}" said \\"{marker}\\"'))
    assert markers.scan(frame) == [("message", 42), ("message", 42)]


def test_find_reads_a_marker_from_decoded_text() -> None:
    assert markers.find(f"x {markers.make('message', 5)} y") == ("message", 5)
    assert markers.find("no marker") is None


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_decode_splits_arrays_into_objects(protocol: Protocol) -> None:
    assert frames.decode(protocol, _frame(protocol, [_push("a", 1), _push("b", 2)]))[1]["off"] == 2
    assert frames.decode(protocol, _frame(protocol, {"id": 1, "ok": {}})) == [{"id": 1, "ok": {}}]


@pytest.mark.parametrize(
    ("protocol", "frame"),
    [("json", b"{nope"), ("json", b"[1, 2]"), ("msgpack", b"\xc1"), ("msgpack", b"\x05")],
)
def test_decode_rejects_what_is_not_objects(protocol: Protocol, frame: bytes) -> None:
    with pytest.raises(BadFrame):
        frames.decode(protocol, frame)
