"""The node: this process's entry to the cluster for commands and publications.

Domains register *namespaces* (``room``, ``group``: who may subscribe, what a
snapshot holds, how to recover) and *ops* (command handlers). The gateway hands every
decoded command to :meth:`Node.dispatch`; domains publish with :meth:`Node.publish`,
which always goes through the broker, never straight to the local hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .auth import Identity
from .broker import Broker, HistoryPolicy, Lane, Publication, StreamPosition
from .commands import Args, Command
from .config import Settings
from .errors import ProtocolError
from .hub import KICK_EVENT, GapRecovery, Hub, Subscriber
from .metrics import Metrics

#: Largest number of missed publications returned by a recovering subscribe.
RECOVERY_LIMIT = 1000


class Session(Subscriber, Protocol):
    """A connection as command handlers see it."""

    identity: Identity

    def subscribed(self, channel: str) -> bool: ...

    def on_subscribed(self, channel: str, position: StreamPosition) -> None:
        """Record the subscription; pushes start once the reply is written."""

    def on_unsubscribed(self, channel: str) -> None:
        """Forget the subscription."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to ``subscribe`` with ``since``: ALL missed pushes, or none."""

    publications: list[Publication]
    position: StreamPosition
    recovered: bool


class Namespace:
    """How one kind of channel (``<prefix>:<id>``) behaves; domains subclass it.

    The defaults suit broker-history channels: offsets assigned by the broker,
    recovery from the broker's bounded history.
    """

    prefix: str = ""
    #: History kept by the broker; None when the domain assigns offsets itself.
    history: HistoryPolicy | None = None
    #: Per-viewer budget (events/s) of the sampled lane; None samples nothing.
    sampled_budget_per_s: float | None = None

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def authorize_subscribe(self, identity: Identity, channel_id: str) -> None:
        """Raise ProtocolError unless ``identity`` may read the channel."""
        raise ProtocolError("forbidden", "no one may subscribe here")

    async def snapshot(self, identity: Identity, channel_id: str) -> dict[str, Any]:
        return {}

    async def position(self, channel: str) -> StreamPosition:
        return await self.broker.position(channel)

    async def recover(self, channel: str, since: StreamPosition) -> Recovery:
        page = await self.broker.history(channel, since.offset, limit=RECOVERY_LIMIT)
        ok = page.complete and page.position.epoch == since.epoch
        return Recovery(page.publications if ok else [], page.position, ok)

    def on_unsubscribe(self, session: Session, channel_id: str) -> None:
        """Called when a session leaves the channel (explicitly or by closing)."""


Reply = Mapping[str, Any]
OpHandler = Callable[[Session, Args], Reply | Coroutine[Any, Any, Reply]]
"""A command handler. It returns the reply when it can answer without waiting (a
sold-out flag, a ping) and a coroutine when it must wait for I/O: the gateway then
finishes it in the connection's worker. Answering at once costs no task."""


class Node:
    """Routes commands to handlers and publications to the broker."""

    def __init__(self, broker: Broker, metrics: Metrics, settings: Settings) -> None:
        self.broker = broker
        self.metrics = metrics
        self.hub = Hub(
            broker,
            metrics,
            flush_interval_s=settings.flush_interval_s,
            large_flush_interval_s=settings.large_channel_flush_interval_s,
            large_channel=settings.large_channel_subscribers,
            sampled_budget=self._sampled_budget,
            recover_gap=self._recover_gap,
        )
        self._namespaces: dict[str, Namespace] = {}
        self._ops: dict[str, OpHandler] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "ping": self._ping,
        }

    # --- registration -------------------------------------------------------------

    def add_namespace(self, namespace: Namespace) -> None:
        if namespace.prefix in self._namespaces:
            raise ValueError(f"namespace {namespace.prefix!r} registered twice")
        self._namespaces[namespace.prefix] = namespace

    def add_op(self, op: str, handler: OpHandler) -> None:
        if op in self._ops:
            raise ValueError(f"op {op!r} registered twice")
        self._ops[op] = handler

    def namespace(self, channel: str) -> tuple[Namespace, str]:
        """The namespace of ``channel`` and the id after the prefix."""
        prefix, sep, channel_id = channel.partition(":")
        namespace = self._namespaces.get(prefix)
        if not sep or not channel_id or namespace is None:
            raise ProtocolError("bad_request", f"unknown channel {channel[:80]!r}")
        return namespace, channel_id

    def _sampled_budget(self, channel: str) -> float | None:
        prefix = channel.partition(":")[0]
        namespace = self._namespaces.get(prefix)
        return None if namespace is None else namespace.sampled_budget_per_s

    async def _recover_gap(self, channel: str, since: StreamPosition) -> GapRecovery:
        namespace, _ = self.namespace(channel)
        recovery = await namespace.recover(channel, since)
        return GapRecovery(recovery.publications, recovery.recovered)

    # --- commands -----------------------------------------------------------------

    def dispatch(self, session: Session, command: Command) -> Reply | Coroutine[Any, Any, Reply]:
        """Start ``command``: its reply, or the coroutine that will produce it."""
        handler = self._ops.get(command.op)
        if handler is None:
            raise ProtocolError("bad_request", f"unknown op {command.op[:40]!r}")
        return handler(session, Args(command.args))

    def knows(self, op: str) -> bool:
        return op in self._ops

    def _ping(self, session: Session, args: Args) -> Reply:
        return {"t": time.time()}

    async def _subscribe(self, session: Session, args: Args) -> Mapping[str, Any]:
        channel = args.text("ch", max_len=200)
        namespace, channel_id = self.namespace(channel)
        if session.subscribed(channel):
            raise ProtocolError("bad_request", f"already subscribed to {channel}")
        since = args.obj("since", optional=True)
        await namespace.authorize_subscribe(session.identity, channel_id)
        await self.hub.subscribe(session, channel)
        try:
            if since is not None:
                since_args = Args(since)
                position = StreamPosition(
                    since_args.integer("off", min=0), since_args.text("epoch", max_len=64, optional=True)
                )
                recovery = await namespace.recover(channel, position)
            else:
                recovery = Recovery([], await namespace.position(channel), False)
            state = await namespace.snapshot(session.identity, channel_id)
        except BaseException:
            self.hub.unsubscribe(session, channel)
            raise
        if not self.hub.has(session, channel):
            raise ProtocolError("forbidden", "removed from the channel while subscribing")
        missed = [
            {"ch": channel, "ev": pub.event, "off": pub.offset, "data": pub.data}
            for pub in recovery.publications
        ]
        session.on_subscribed(channel, recovery.position)
        return {
            "off": recovery.position.offset,
            "epoch": recovery.position.epoch,
            "recovered": recovery.recovered,
            "state": state,
            "missed": missed,
        }

    async def _unsubscribe(self, session: Session, args: Args) -> Mapping[str, Any]:
        channel = args.text("ch", max_len=200)
        self.namespace(channel)  # validates the name
        if session.subscribed(channel):
            self.leave(session, channel)
        return {}

    def leave(self, session: Session, channel: str) -> None:
        """Drop ``session`` from ``channel`` and let the namespace know."""
        session.on_unsubscribed(channel)
        self.hub.unsubscribe(session, channel)
        namespace, channel_id = self.namespace(channel)
        namespace.on_unsubscribe(session, channel_id)

    # --- publishing ---------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        event: str,
        data: dict[str, Any],
        *,
        lane: Lane = "priority",
        author: str | None = None,
        offset: int = 0,
        ephemeral: bool = False,
    ) -> StreamPosition:
        """Publish through the broker; the channel's namespace decides on history.

        ``ephemeral`` events (aggregated likes, viewer counts) skip history: a
        snapshot carries their latest value anyway.
        """
        namespace, _ = self.namespace(channel)
        pub = Publication(channel, event, data, offset, lane, author)
        history = None if ephemeral or offset else namespace.history
        self.metrics.broker_published.inc()
        return await self.broker.publish(pub, history=history)

    async def publish_all(self, pubs: Sequence[Publication]) -> None:
        """Publish events whose offsets the domain assigned (a group's seqs), in order, in
        one broker batch: no history, no task per event."""
        for pub in pubs:
            self.namespace(pub.channel)  # validates the name
        self.metrics.broker_published.inc(len(pubs))
        await self.broker.publish_all(pubs)

    async def kick(self, channel: str, user_id: str, *, code: str, reason: str) -> None:
        """Remove ``user_id`` from ``channel`` on every process."""
        await self.broker.publish(
            Publication(channel, KICK_EVENT, {"user_id": user_id, "code": code, "reason": reason})
        )
