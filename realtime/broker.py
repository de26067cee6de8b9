"""The broker moves publications between processes; the hub fans them out locally.

Guarantees every implementation keeps (tests/test_broker.py runs the same suite
against each):

* Publications on one channel reach each subscribed process in publish order.
* Delivery is at most once: pub/sub is lossy across outages, which is why history
  exists. After the broker reconnects it calls ``on_resubscribed`` with every
  channel it re-joined, so the hub can recover the gap from history.
* ``publish(..., history=...)`` assigns the channel's next offset atomically with
  storing the publication in bounded history and broadcasting it, so every process
  sees the same offset for the same publication.
* A channel's history belongs to an *epoch*; a new epoch (history lost, e.g. Redis
  restarted empty) means offsets restarted and old positions cannot be recovered.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

Lane = Literal["priority", "sampled"]


@dataclass(slots=True)
class Publication:
    """One event on one channel."""

    channel: str
    event: str
    data: dict[str, Any]
    #: Position in the channel's stream; 0 for ephemeral events kept in no history.
    offset: int = 0
    #: "sampled" events may be thinned out for huge audiences; "priority" never are.
    lane: Lane = "priority"
    #: User whose action produced it; their own sampled events are never dropped.
    author: str | None = None
    #: Wall-clock publish time (seconds), for the pub/sub lag metric.
    ts: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """Broker wire form (the offset travels beside it)."""
        return msgpack.packb(  # type: ignore[no-any-return]
            (self.event, self.data, self.lane, self.author, self.ts), use_bin_type=True
        )

    @classmethod
    def decode(cls, channel: str, offset: int, payload: bytes) -> Publication:
        event, data, lane, author, ts = msgpack.unpackb(payload, raw=False)
        return cls(channel, event, data, offset, lane, author, ts)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a channel's stream to keep for recovery."""

    size: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Publications after a position, or ``complete=False`` when some are gone."""

    publications: list[Publication]
    position: StreamPosition
    complete: bool


PublicationHandler = Callable[[Publication], None]
ResubscribeHandler = Callable[[set[str]], None]


class Broker(abc.ABC):
    """Moves publications between processes (see the module docstring for guarantees)."""

    def __init__(self) -> None:
        self._on_publication: PublicationHandler = lambda pub: None
        self._on_resubscribed: ResubscribeHandler = lambda channels: None

    def set_handlers(self, on_publication: PublicationHandler, on_resubscribed: ResubscribeHandler) -> None:
        self._on_publication = on_publication
        self._on_resubscribed = on_resubscribed

    async def start(self) -> None:
        """Connect; called once before use."""

    async def close(self) -> None:
        """Disconnect; pending publishes are flushed first."""

    async def ping(self) -> None:
        """Raise if the broker is unreachable (readiness)."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; the hub calls it once per channel per process."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def publish(self, pub: Publication, *, history: HistoryPolicy | None = None) -> StreamPosition:
        """Broadcast ``pub``; with ``history`` assign and return its offset."""

    async def publish_all(self, pubs: Sequence[Publication]) -> None:
        """Broadcast ``pubs`` in order, without history (their offsets are the domain's).

        Brokers that batch send them together; the default publishes one by one.
        Raises ProtocolError("unavailable") if any was not sent.
        """
        for pub in pubs:
            await self.publish(pub)

    @abc.abstractmethod
    async def history(self, channel: str, since: int, *, limit: int) -> HistoryPage:
        """Publications with offset > ``since``, oldest first, at most ``limit``."""

    @abc.abstractmethod
    async def position(self, channel: str) -> StreamPosition:
        """The channel's latest offset and its epoch."""


class _MemoryStream:
    __slots__ = ("epoch", "items", "offset")

    def __init__(self, size: int) -> None:
        self.offset = 0
        self.epoch = secrets.token_hex(4)
        self.items: deque[Publication] = deque(maxlen=size)


class MemoryBroker(Broker):
    """Single-process broker: publishing calls the hub directly.

    History lives in per-channel ring buffers; the epoch is new for every process, since
    a restart loses them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, _MemoryStream] = {}
        self._subscribed: set[str] = set()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    def _stream(self, channel: str, size: int = 1) -> _MemoryStream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _MemoryStream(size)
        elif stream.items.maxlen is not None and stream.items.maxlen < size:
            stream.items = deque(stream.items, maxlen=size)
        return stream

    async def publish(self, pub: Publication, *, history: HistoryPolicy | None = None) -> StreamPosition:
        if history is not None:
            stream = self._stream(pub.channel, history.size)
            stream.offset += 1
            pub.offset = stream.offset
            stream.items.append(pub)
            position = StreamPosition(stream.offset, stream.epoch)
        else:
            position = await self.position(pub.channel)
        if pub.channel in self._subscribed:
            self._on_publication(pub)
        return position

    async def history(self, channel: str, since: int, *, limit: int) -> HistoryPage:
        stream = self._stream(channel)
        position = StreamPosition(stream.offset, stream.epoch)
        missed = stream.offset - since
        if missed <= 0:
            return HistoryPage([], position, complete=since == stream.offset)
        kept = [pub for pub in stream.items if pub.offset > since]
        complete = len(kept) == missed and missed <= limit
        return HistoryPage(kept[:limit], position, complete=complete)

    async def position(self, channel: str) -> StreamPosition:
        stream = self._stream(channel)
        return StreamPosition(stream.offset, stream.epoch)
