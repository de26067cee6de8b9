"""Counting markers in a raw stream: exact under any split of the reads, sampled latency."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from loadtest import markers
from loadtest.counting import MarkerCounter, sample_every


def _push(lane: str, sent_us: int) -> dict[str, Any]:
    return {"ch": "room:7", "ev": "comment", "off": sent_us, "data": {"text": markers.make(lane, sent_us)}}


def _server_frame(payload: bytes, opcode: Opcode = Opcode.TEXT) -> bytes:
    """An unmasked frame, as a server writes it."""
    return Frame(opcode, payload).serialize(mask=False, extensions=[])


def _stream(count: int, *, batch: int, protocol: str = "json") -> tuple[bytes, list[tuple[str, int]]]:
    """WebSocket frames carrying `count` marked pushes, `batch` per array frame, with noise."""
    sent = [("priority" if i % 10 == 9 else "comment", 1_700_000_000_000_000 + i * 137) for i in range(count)]
    out = []
    for start in range(0, count, batch):
        pushes: list[Any] = [_push(lane, us) for lane, us in sent[start : start + batch]]
        noise = {"ch": "room:7", "ev": "viewers", "data": {"count": 3}}
        values = [[*pushes[:1], noise, *pushes[1:]]] if batch > 1 else [pushes[0], noise]
        for value in values:
            if protocol == "json":
                out.append(_server_frame(orjson.dumps(value)))
            else:
                out.append(_server_frame(msgpack.packb(value, use_bin_type=True), Opcode.BINARY))
    return b"".join(out), sent


def _feed(counter: MarkerCounter, stream: bytes, cuts: list[int]) -> int:
    found = 0
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        found += counter.feed(stream[last:cut])
        last = cut
    return found


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
@pytest.mark.parametrize("batch", [1, 16])
def test_counts_are_exact_when_a_marker_is_cut_at_any_byte(protocol: str, batch: int) -> None:
    stream, sent = _stream(40, batch=batch, protocol=protocol)
    first = stream.find(b"[lt:")
    for cut in range(first - 1, first + 30):  # every split through the first marker
        counter = MarkerCounter()
        assert _feed(counter, stream, [cut]) == len(sent)
        assert counter.counts == {"comment": 36, "priority": 4, "message": 0}
        assert counter.samples == sent  # every=1: each marker read back, in stream order


@settings(max_examples=200, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=60),
    every=st.integers(min_value=1, max_value=9),
    phase=st.integers(min_value=0, max_value=8),
    batch=st.sampled_from([1, 3, 16]),
)
def test_any_split_counts_exactly_and_samples_every_nth(
    cuts: list[int], every: int, phase: int, batch: int
) -> None:
    stream, sent = _stream(50, batch=batch)
    counter = MarkerCounter(every, phase)
    assert _feed(counter, stream, [c % (len(stream) + 1) for c in cuts]) == len(sent)
    assert counter.total == len(sent)
    assert counter.counts["priority"] == 5
    assert counter.samples == sent[phase % every :: every]


def test_one_byte_reads() -> None:
    stream, sent = _stream(12, batch=4)
    counter = MarkerCounter(every=5, phase=2)
    assert sum(counter.feed(stream[i : i + 1]) for i in range(len(stream))) == 12
    assert counter.samples == sent[2::5]


def test_socketio_packets_count_like_livemart_pushes() -> None:
    """Socket.IO frames are `42["msg",{...}]`: the marker sits in a string just the same."""
    frames = [
        _server_frame(b'42["msg",' + orjson.dumps({"text": markers.make("comment", 10 + i)}) + b"]")
        for i in range(7)
    ]
    frames.insert(3, _server_frame(b"2"))  # an engine.io ping in between
    counter = MarkerCounter()
    assert counter.feed(b"".join(frames)) == 7
    assert [us for _, us in counter.samples] == list(range(10, 17))


def test_text_without_markers_counts_nothing() -> None:
    counter = MarkerCounter()
    assert counter.feed(b'{"text": "[lt:x:12] [lt: lt:c: [lt:c') == 0
    assert counter.feed(b":9]") == 1  # ...but the cut-off one completes with the next read
    assert counter.samples == [("comment", 9)]


def test_sampling_step_keeps_recording_bounded() -> None:
    assert sample_every(0) == 1
    assert sample_every(10_000) == 1
    assert sample_every(1_000_000) == 100
    with pytest.raises(ValueError):
        MarkerCounter(every=0)


def test_counting_fewer_lanes_sees_only_those() -> None:
    stream, sent = _stream(30, batch=5)  # comments, and a priority message in ten
    comments = [s for s in sent if s[0] == "comment"]
    counter = MarkerCounter(every=4, phase=1, lanes=("comment",))
    stream_without_priority = stream.replace(b"[lt:p:", b"[xx:p:")
    assert _feed(counter, stream_without_priority, [17, 400, 401]) == len(comments)
    assert counter.counts == {"comment": len(comments)}
    assert counter.samples == comments[1::4]
    with pytest.raises(ValueError):
        MarkerCounter(lanes=("gossip",))
