"""The local fan-out hot path, driven through the in-process broker."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

from realtime import hub as hub_module
from realtime.broker import HistoryPolicy, MemoryBroker, Publication, StreamPosition
from realtime.codec import JSON, MSGPACK, Codec
from realtime.hub import GapRecovery, Hub
from realtime.metrics import Metrics

HISTORY = HistoryPolicy(100, 60)


def frame_payload(data: bytes) -> bytes:
    """The payload of one serialized server frame."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return bytes(done.value.data)
    raise AssertionError("incomplete frame")


class Recorder:
    """A stand-in connection that keeps the frames the hub writes to it."""

    def __init__(self, codec: Codec = JSON, user_id: str | None = None, hub: Hub | None = None) -> None:
        self.hub = hub
        self.codec = codec
        self.user_id = user_id
        self.frames: list[bytes] = []
        self.kicked: list[tuple[str, str]] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.frames.append(b"CLOSE %d" % code)

    def on_kicked(self, channel: str, code: str, reason: str) -> None:
        self.kicked.append((channel, code))
        if self.hub is not None:
            self.hub.unsubscribe(self, channel)

    def pushes(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for frame in self.frames:
            value = orjson.loads(frame_payload(frame))
            out.extend(value if isinstance(value, list) else [value])
        return out


async def joined(hub: Hub, sub: Recorder, channel: str) -> None:
    await hub.subscribe(sub, channel)
    hub.joined(sub, channel, StreamPosition(0, ""))


async def settle(interval: float) -> None:
    await asyncio.sleep(interval * 3)


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


async def test_same_frame_bytes_go_to_every_subscriber(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.02)
    subs = [Recorder() for _ in range(50)]
    for sub in subs:
        await joined(hub, sub, "c:1")
    await broker.publish(Publication("c:1", "n", {"i": 1}), history=HISTORY)
    await settle(0.02)
    frames = {id(sub.frames[0]) for sub in subs}
    assert len(frames) == 1, "the frame must be encoded once and shared"
    assert subs[0].pushes() == [{"ch": "c:1", "ev": "n", "off": 1, "data": {"i": 1}}]


async def test_burst_is_coalesced_into_one_frame_per_tick(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.05)
    sub = Recorder()
    await joined(hub, sub, "c:1")
    await broker.publish(Publication("c:1", "n", {"i": 0}), history=HISTORY)
    await asyncio.sleep(0)  # idle channel: the first event goes out on the next loop turn
    await asyncio.sleep(0)
    assert len(sub.frames) == 1
    for i in range(1, 30):
        await broker.publish(Publication("c:1", "n", {"i": i}), history=HISTORY)
    await settle(0.05)
    assert len(sub.frames) == 2
    assert [p["data"]["i"] for p in sub.pushes()] == list(range(30))  # type: ignore[index]


async def test_codecs_are_encoded_separately_with_the_same_content(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.01)
    js, mp = Recorder(JSON), Recorder(MSGPACK)
    await joined(hub, js, "c:1")
    await joined(hub, mp, "c:1")
    await broker.publish(Publication("c:1", "n", {"t": "é"}), history=HISTORY)
    await settle(0.01)
    assert MSGPACK.loads(frame_payload(mp.frames[0])) == js.pushes()[0]


async def test_joining_subscriber_gets_only_what_is_newer_than_its_snapshot(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.01)
    sub = Recorder()
    await hub.subscribe(sub, "c:1")
    for i in range(3):
        await broker.publish(Publication("c:1", "n", {"i": i}), history=HISTORY)
    await settle(0.01)
    assert sub.frames == []  # reply not sent yet: nothing may overtake it
    hub.joined(sub, "c:1", StreamPosition(1, (await broker.position("c:1")).epoch))
    assert [p["off"] for p in sub.pushes()] == [2, 3]


async def test_sampled_lane_respects_budget_but_priority_and_own_comments_pass(
    broker: MemoryBroker,
) -> None:
    metrics = Metrics()
    hub = Hub(broker, metrics, flush_interval_s=0.01, sampled_budget=lambda ch: 5.0)
    viewers = [Recorder(user_id=f"v{i}") for i in range(10)]
    author = Recorder(user_id="chatty")
    for sub in [*viewers, author]:
        await joined(hub, sub, "c:1")
    for i in range(100):
        await broker.publish(
            Publication("c:1", "comment", {"i": i}, lane="sampled", author="chatty"), history=HISTORY
        )
    await broker.publish(Publication("c:1", "pin", {}), history=HISTORY)
    await settle(0.01)
    seen = viewers[0].pushes()
    comments = [p for p in seen if p["ev"] == "comment"]
    assert len(comments) <= 5
    assert any(p["ev"] == "pin" for p in seen)
    for viewer in viewers:
        assert [p["off"] for p in viewer.pushes()] == [p["off"] for p in seen]
    assert len([p for p in author.pushes() if p["ev"] == "comment"]) == 100
    assert metrics.sampled_out._value.get() == (100 - len(comments)) * 11


async def test_kick_removes_only_that_user(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.01)
    bad, good = Recorder(user_id="bad", hub=hub), Recorder(user_id="good", hub=hub)
    await joined(hub, bad, "c:1")
    await joined(hub, good, "c:1")
    await broker.publish(Publication("c:1", "$kick", {"user_id": "bad", "code": "banned", "reason": ""}))
    await broker.publish(Publication("c:1", "n", {}), history=HISTORY)
    await settle(0.01)
    assert bad.kicked == [("c:1", "banned")] and bad.frames == []
    assert len(good.pushes()) == 1


async def test_last_unsubscribe_releases_the_broker_subscription(broker: MemoryBroker) -> None:
    hub = Hub(broker, Metrics(), flush_interval_s=0.01)
    a, b = Recorder(), Recorder()
    await joined(hub, a, "c:1")
    await joined(hub, b, "c:1")
    hub.unsubscribe(a, "c:1")
    await asyncio.sleep(0.01)
    assert "c:1" in broker._subscribed
    hub.unsubscribe(b, "c:1")
    await asyncio.sleep(0.01)
    assert "c:1" not in broker._subscribed and hub.subscriber_count("c:1") == 0


async def test_a_sub_joining_between_publish_and_flush_gets_no_duplicate(broker: MemoryBroker) -> None:
    """Found by the kill -9 fault test: a publication pending at join time was sent twice."""
    hub = Hub(broker, Metrics(), flush_interval_s=0.05)
    old = Recorder()
    await joined(hub, old, "c:1")
    await broker.publish(Publication("c:1", "n", {"i": 0}), history=HISTORY)
    await settle(0.05)  # the channel is now busy: the next publication waits for a flush
    await broker.publish(Publication("c:1", "n", {"i": 1}), history=HISTORY)  # pending, off 2
    new = Recorder()
    await hub.subscribe(new, "c:1")
    # The subscribe reply's history already held offset 2, so the reply carried it.
    hub.joined(new, "c:1", StreamPosition(2, (await broker.position("c:1")).epoch))
    await broker.publish(Publication("c:1", "n", {"i": 2}), history=HISTORY)  # off 3
    await settle(0.05)
    assert [p["off"] for p in new.pushes()] == [3]
    assert [p["off"] for p in old.pushes()] == [1, 2, 3]


async def test_a_kick_during_a_subscribe_removes_the_joining_subscriber(broker: MemoryBroker) -> None:
    """The node then fails the subscribe instead of confirming a dead subscription."""
    hub = Hub(broker, Metrics(), flush_interval_s=0.01)
    sub = Recorder(user_id="bad", hub=hub)
    await hub.subscribe(sub, "c:1")  # reply not sent yet
    await broker.publish(Publication("c:1", "$kick", {"user_id": "bad", "code": "banned", "reason": ""}))
    assert sub.kicked == [("c:1", "banned")]
    assert not hub.has(sub, "c:1")


async def test_publications_during_gap_recovery_wait_for_the_recovered_ones(broker: MemoryBroker) -> None:
    """After a broker outage the gap goes out first, then what arrived meanwhile, each once."""
    release = asyncio.Event()

    async def recover(channel: str, since: StreamPosition) -> GapRecovery:
        await release.wait()
        page = await broker.history(channel, since.offset, limit=100)
        return GapRecovery(page.publications, True)

    hub = Hub(broker, Metrics(), flush_interval_s=0.01, recover_gap=recover)
    sub = Recorder()
    await joined(hub, sub, "c:gap")
    await broker.publish(Publication("c:gap", "n", {"i": 1}), history=HISTORY)
    await settle(0.01)
    await broker.unsubscribe("c:gap")  # the outage: 2 and 3 are stored, never delivered
    for i in (2, 3):
        await broker.publish(Publication("c:gap", "n", {"i": i}), history=HISTORY)
    await broker.subscribe("c:gap")
    hub.on_resubscribed({"c:gap"})
    await broker.publish(Publication("c:gap", "n", {"i": 4}), history=HISTORY)  # live again
    await settle(0.01)
    assert [p["data"] for p in sub.pushes()] == [{"i": 1}]  # 4 waits for the gap
    release.set()
    await settle(0.01)
    assert [p["off"] for p in sub.pushes()] == [1, 2, 3, 4]


async def test_a_channel_that_must_resync_gets_nothing_new_before_it(broker: MemoryBroker) -> None:
    release = asyncio.Event()

    async def cannot_recover(channel: str, since: StreamPosition) -> GapRecovery:
        await release.wait()
        return GapRecovery([], False)

    hub = Hub(broker, Metrics(), flush_interval_s=0.01, recover_gap=cannot_recover)
    sub = Recorder()
    await joined(hub, sub, "c:lost")
    hub.on_resubscribed({"c:lost"})
    await broker.publish(Publication("c:lost", "n", {"i": 1}), history=HISTORY)
    await settle(0.01)
    release.set()
    await settle(0.01)
    assert sub.frames == [b"CLOSE 4011"]  # the new epoch's event comes with the snapshot


async def test_a_recovery_that_hangs_ends_in_a_resync(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publications are held while a gap is recovered: a recovery that never answers must
    not hold them forever."""
    monkeypatch.setattr(hub_module, "GAP_RECOVERY_TIMEOUT_S", 0.05)

    async def never(channel: str, since: StreamPosition) -> GapRecovery:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    hub = Hub(broker, Metrics(), flush_interval_s=0.01, recover_gap=never)
    sub = Recorder()
    await joined(hub, sub, "c:hang")
    hub.on_resubscribed({"c:hang"})
    await broker.publish(Publication("c:hang", "n", {"i": 1}), history=HISTORY)
    await settle(0.05)
    assert sub.frames == [b"CLOSE 4011"]
