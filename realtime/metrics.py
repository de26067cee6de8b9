"""Prometheus metrics of one process, in a registry of its own.

Hot-path counters are bumped once per flush with the number of deliveries, never
once per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every transport metric; domains add theirs to :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._command_children: dict[str, Histogram] = {}
        self._error_children: dict[str, Counter] = {}
        r = self.registry
        self.connections = Gauge("livemart_connections", "Open WebSocket connections", registry=r)
        self.connections_total = Counter(
            "livemart_connections_accepted", "WebSocket connections accepted", registry=r
        )
        self.subscriptions = Gauge("livemart_subscriptions", "Channel subscriptions", registry=r)
        self.channels = Gauge("livemart_channels", "Channels with local subscribers", registry=r)
        self.frames_sent = Counter("livemart_frames_sent", "Push frames written", registry=r)
        self.messages_sent = Counter(
            "livemart_messages_sent", "Pushes delivered (a batched frame counts each)", registry=r
        )
        self.bytes_sent = Counter("livemart_bytes_sent", "Push bytes written", registry=r)
        self.sampled_out = Counter(
            "livemart_sampled_out",
            "Sampled-lane deliveries skipped by the viewer budget",
            registry=r,
        )
        self.slow_disconnects = Counter(
            "livemart_slow_disconnects", "Clients cut for reading too slowly", registry=r
        )
        self.closes = Counter("livemart_closes", "Connections closed by the server", ["code"], registry=r)
        self.errors = Counter("livemart_command_errors", "Error replies", ["code"], registry=r)
        self.broker_published = Counter(
            "livemart_broker_published", "Publications sent to the broker", registry=r
        )
        self.broker_received = Counter(
            "livemart_broker_received", "Publications received from the broker", registry=r
        )
        self.pubsub_lag = Histogram(
            "livemart_pubsub_lag_seconds",
            "Publish to receipt by this process",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.command_latency = Histogram(
            "livemart_command_seconds",
            "Command handling time",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "livemart_event_loop_lag_seconds",
            "Event-loop scheduling delay",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.resyncs = Counter(
            "livemart_resyncs",
            "Channels whose subscribers had to resync after an outage",
            registry=r,
        )
        self.recovered_after_outage = Counter(
            "livemart_recovered_after_outage",
            "Publications recovered from history after an outage",
            registry=r,
        )

    def command_timer(self, op: str) -> Histogram:
        """The latency histogram of one op; children are cached (``labels`` is slow)."""
        child = self._command_children.get(op)
        if child is None:
            child = self._command_children[op] = self.command_latency.labels(op)
        return child

    def error_counter(self, code: str) -> Counter:
        child = self._error_children.get(code)
        if child is None:
            child = self._error_children[code] = self.errors.labels(code)
        return child

    async def watch_loop_lag(self, interval_s: float = 0.5) -> None:
        """Run forever, observing how late a timer fires."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                start = loop.time()
                await asyncio.sleep(interval_s)
                self.loop_lag.observe(max(0.0, loop.time() - start - interval_s))
