"""Local fan-out: which connections of this process listen to which channel.

The hub never publishes; it only delivers what the broker hands it (STYLE: the local
hub is not the broker), so one process and many behave the same. Delivery is the hot
path: publications arriving on a channel are coalesced for at most one flush
interval, encoded once per codec, framed once, and the same bytes are written to
every subscriber. An idle channel flushes on the next loop turn, without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .broker import Broker, Publication, StreamPosition
from .codec import Codec, push_batch
from .errors import CloseCode
from .metrics import Metrics
from .ratelimit import TokenBucket

log = logging.getLogger("livemart.hub")

#: Pushes per frame at most; a bigger flush is split so no frame grows unbounded.
MAX_PUSHES_PER_FRAME = 128
#: Longest a gap recovery may take before the channel resyncs instead; publications
#: arriving meanwhile are held, so this also bounds how many wait.
GAP_RECOVERY_TIMEOUT_S = 10.0
#: Control events travel through the broker like publications but stop at the hub.
KICK_EVENT = "$kick"


class Subscriber(Protocol):
    """What the hub needs from a connection; implemented by gateway.Connection."""

    codec: Codec
    user_id: str | None

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def on_kicked(self, channel: str, code: str, reason: str) -> None:
        """Leave ``channel`` (through the node, so the namespace hears of it)."""


@dataclass(frozen=True, slots=True)
class GapRecovery:
    """Publications missed while the broker was away, or ``complete=False``."""

    publications: list[Publication]
    complete: bool


GapRecoverer = Callable[[str, StreamPosition], Awaitable[GapRecovery]]


@dataclass(slots=True)
class _Channel:
    name: str
    #: Completes when the broker subscription for this channel is in place.
    ready: asyncio.Future[None]
    #: Subscribers per codec, so each batch is encoded once per codec in use.
    by_codec: dict[Codec, set[Subscriber]] = field(default_factory=dict)
    #: Signed-in subscribers by user, to reach an author or kick a user.
    by_user: dict[str, set[Subscriber]] = field(default_factory=dict)
    #: Subscribers whose subscribe reply is not sent yet, with what they missed meanwhile.
    joining: dict[Subscriber, list[Publication]] = field(default_factory=dict)
    pending: list[Publication] = field(default_factory=list)
    #: Subscribers that went live while ``pending`` held publications their subscribe
    #: reply already covered: the next flush sends them only what is newer than this offset.
    fresh: dict[Subscriber, int] = field(default_factory=dict)
    flush_handle: asyncio.Handle | None = None
    last_flush: float = 0.0
    #: Last stream position seen, for pushes of ephemeral events and gap recovery.
    offset: int = 0
    epoch: str = ""
    #: Budget of the sampled lane (None: nothing is sampled on this channel).
    budget: TokenBucket | None = None
    #: Publications that arrived while the gap after a broker outage was being recovered;
    #: None when no recovery is running. They go out after the recovered ones, or not at
    #: all if the channel must resync (its subscribers get a fresh snapshot instead).
    held: list[Publication] | None = None

    def count(self) -> int:
        return sum(len(s) for s in self.by_codec.values())


class Hub:
    """Per-process registry of channel subscribers and the delivery hot path."""

    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        *,
        flush_interval_s: float,
        large_flush_interval_s: float | None = None,
        large_channel: int = 1000,
        sampled_budget: Callable[[str], float | None] = lambda channel: None,
        recover_gap: GapRecoverer | None = None,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._interval = flush_interval_s
        self._large_interval = flush_interval_s if large_flush_interval_s is None else large_flush_interval_s
        self._large_channel = large_channel
        self._sampled_budget = sampled_budget
        self._recover_gap = recover_gap
        self._channels: dict[str, _Channel] = {}
        #: Tail of broker (un)subscribe operations per channel, to keep them ordered.
        self._broker_ops: dict[str, asyncio.Future[None]] = {}
        self._random = random.Random()
        broker.set_handlers(self.on_publication, self.on_resubscribed)

    # --- membership ---------------------------------------------------------------

    def channels(self) -> Iterable[str]:
        return self._channels.keys()

    def has(self, sub: Subscriber, channel: str) -> bool:
        state = self._channels.get(channel)
        return state is not None and sub in state.by_codec.get(sub.codec, ())

    def subscriber_count(self, channel: str) -> int:
        state = self._channels.get(channel)
        return 0 if state is None else state.count()

    async def subscribe(self, sub: Subscriber, channel: str) -> None:
        """Add ``sub`` as *joining*: it gets pushes only after :meth:`joined`."""
        state = self._channels.get(channel)
        if state is None:
            ready = self._chain(channel, self._broker.subscribe)
            state = self._channels[channel] = _Channel(channel, ready)
            budget = self._sampled_budget(channel)
            if budget is not None:
                state.budget = TokenBucket(budget, budget)
            self._metrics.channels.inc()
        state.by_codec.setdefault(sub.codec, set()).add(sub)
        if sub.user_id is not None:
            state.by_user.setdefault(sub.user_id, set()).add(sub)
        state.joining[sub] = []
        self._metrics.subscriptions.inc()
        try:
            await asyncio.shield(state.ready)
        except BaseException:
            self.unsubscribe(sub, channel)
            raise

    def joined(self, sub: Subscriber, channel: str, position: StreamPosition) -> None:
        """The subscribe reply went out: send what arrived meanwhile, then go live."""
        state = self._channels.get(channel)
        if state is None:
            return
        missed = state.joining.pop(sub, None)
        if position.offset > state.offset or position.epoch != state.epoch:
            state.offset, state.epoch = position.offset, position.epoch
        # What is still pending goes out with the next flush (filtered through ``fresh``);
        # only what was already flushed while the sub was joining is sent from here.
        pending = {id(pub) for pub in state.pending}
        if missed:
            pushes = [
                self._push(state, pub)
                for pub in missed
                if id(pub) not in pending and (pub.offset == 0 or pub.offset > position.offset)
            ]
            if pushes:
                sub.send(sub.codec.frame(push_batch(pushes)))
        if pending:
            state.fresh[sub] = position.offset

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        subs = state.by_codec.get(sub.codec)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        state.joining.pop(sub, None)
        state.fresh.pop(sub, None)
        if sub.user_id is not None:
            users = state.by_user.get(sub.user_id)
            if users is not None:
                users.discard(sub)
                if not users:
                    del state.by_user[sub.user_id]
        self._metrics.subscriptions.dec()
        if state.count() == 0:
            del self._channels[channel]
            if state.flush_handle is not None:
                state.flush_handle.cancel()
            self._metrics.channels.dec()
            self._chain(channel, self._broker.unsubscribe)

    def _chain(self, channel: str, operation: Callable[[str], Awaitable[None]]) -> asyncio.Future[None]:
        """Run a broker (un)subscribe after the previous one on the same channel."""
        previous = self._broker_ops.get(channel)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await operation(channel)

        task: asyncio.Future[None] = asyncio.ensure_future(run())
        self._broker_ops[channel] = task
        task.add_done_callback(lambda t: self._forget_op(channel, t))
        return task

    def _forget_op(self, channel: str, task: asyncio.Future[None]) -> None:
        if self._broker_ops.get(channel) is task:
            del self._broker_ops[channel]
        if not task.cancelled() and task.exception() is not None:
            log.warning("broker operation on %s failed: %s", channel, task.exception())

    # --- delivery -----------------------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        """Broker callback: queue ``pub`` for the channel's next flush."""
        self._metrics.broker_received.inc()
        self._metrics.pubsub_lag.observe(max(0.0, time.time() - pub.ts))
        state = self._channels.get(pub.channel)
        if state is None:
            return
        if pub.event == KICK_EVENT:
            self._kick(state, pub.data)
            return
        if state.held is not None:
            state.held.append(pub)
            return
        for missed in state.joining.values():
            missed.append(pub)
        state.pending.append(pub)
        if state.flush_handle is None:
            loop = asyncio.get_running_loop()
            interval = self._large_interval if state.count() >= self._large_channel else self._interval
            due = state.last_flush + interval
            if loop.time() >= due:
                state.flush_handle = loop.call_soon(self._flush, state)
            else:
                state.flush_handle = loop.call_at(due, self._flush, state)

    def _flush(self, state: _Channel) -> None:
        state.flush_handle = None
        state.last_flush = asyncio.get_running_loop().time()
        pubs, state.pending = state.pending, []
        pubs = self._sample(state, pubs)
        if not pubs:
            return
        fresh, state.fresh = state.fresh, {}
        for start in range(0, len(pubs), MAX_PUSHES_PER_FRAME):
            chunk = pubs[start : start + MAX_PUSHES_PER_FRAME]
            pushes = [self._push(state, pub) for pub in chunk]
            value = push_batch(pushes)
            for codec, subs in state.by_codec.items():
                if state.joining or fresh:
                    live = [sub for sub in subs if sub not in state.joining and sub not in fresh]
                else:
                    live = list(subs)
                if not live:
                    continue
                frame = codec.frame(value)
                for sub in live:
                    sub.send(frame)
                self._metrics.frames_sent.inc(len(live))
                self._metrics.messages_sent.inc(len(live) * len(pushes))
                self._metrics.bytes_sent.inc(len(live) * len(frame))
            for sub, since in fresh.items():
                newer = [
                    push
                    for pub, push in zip(chunk, pushes, strict=True)
                    if pub.offset == 0 or pub.offset > since
                ]
                if newer and sub in state.by_codec.get(sub.codec, ()):
                    sub.send(sub.codec.frame(push_batch(newer)))

    def _push(self, state: _Channel, pub: Publication) -> dict[str, Any]:
        if pub.offset > state.offset:
            state.offset = pub.offset
        return {
            "ch": pub.channel,
            "ev": pub.event,
            "off": pub.offset or state.offset,
            "data": pub.data,
        }

    def _sample(self, state: _Channel, pubs: list[Publication]) -> list[Publication]:
        """Keep every priority event and a fair random sample of the sampled lane."""
        if state.budget is None:
            return pubs
        sampled = [i for i, pub in enumerate(pubs) if pub.lane == "sampled"]
        allowed = int(state.budget.refill())
        if len(sampled) <= allowed:
            state.budget.tokens -= len(sampled)
            return pubs
        keep = set(self._random.sample(sampled, allowed))
        state.budget.tokens -= allowed
        kept: list[Publication] = []
        #: An author's own sampled-out events, sent to them alone in one frame.
        own: dict[str, list[dict[str, Any]]] = {}
        dropped = 0
        for i, pub in enumerate(pubs):
            if pub.lane != "sampled" or i in keep:
                kept.append(pub)
                continue
            dropped += 1
            if pub.author is not None and pub.author in state.by_user:
                own.setdefault(pub.author, []).append(self._push(state, pub))
        self._metrics.sampled_out.inc(dropped * state.count())
        for author, pushes in own.items():
            value = push_batch(pushes)
            for sub in state.by_user.get(author, ()):
                if sub not in state.joining:
                    sub.send(sub.codec.frame(value))
        return kept

    def _kick(self, state: _Channel, data: dict[str, Any]) -> None:
        user_id = data.get("user_id")
        for sub in list(state.by_user.get(str(user_id), ())):
            sub.on_kicked(state.name, str(data.get("code", "forbidden")), str(data.get("reason", "")))

    # --- broker outages -----------------------------------------------------------

    def on_resubscribed(self, channels: set[str]) -> None:
        """Broker callback after a reconnect: recover each channel's gap or resync it."""
        for name in channels:
            state = self._channels.get(name)
            if state is not None and state.held is None:
                state.held = []
                task = asyncio.ensure_future(self._fill_gap(state))
                task.add_done_callback(_log_failure)

    async def _fill_gap(self, state: _Channel) -> None:
        """Deliver what the outage hid, then what arrived meanwhile; or make everyone resync.

        New publications are held until then: sent first, they would reach subscribers
        that are about to be told to resync, or ahead of older ones.
        """
        recovery = None
        try:
            if self._recover_gap is not None:
                try:
                    position = StreamPosition(state.offset, state.epoch)
                    async with asyncio.timeout(GAP_RECOVERY_TIMEOUT_S):  # bounds ``held`` too
                        recovery = await self._recover_gap(state.name, position)
                except Exception as exc:  # any failure to recover means: resync
                    log.warning("gap recovery on %s failed: %s", state.name, exc)
        finally:
            held, state.held = state.held or [], None
        if recovery is not None and recovery.complete:
            fresh = [pub for pub in recovery.publications if pub.offset > state.offset]
            self._metrics.recovered_after_outage.inc(len(fresh))
            last = max((pub.offset for pub in fresh), default=state.offset)
            for pub in fresh:
                self.on_publication(pub)
            for pub in held:  # what history already returned is not sent twice
                if pub.offset == 0 or pub.offset > last:
                    self.on_publication(pub)
            return
        self._metrics.resyncs.inc()
        for subs in list(state.by_codec.values()):
            for sub in list(subs):
                sub.close(CloseCode.RESYNC, "stream gap: resubscribe with since")


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("hub task failed", exc_info=task.exception())
