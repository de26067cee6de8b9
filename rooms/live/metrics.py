"""Prometheus metrics of the live-room domain (in the core's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class RoomMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.comments = Counter(
            "livemart_room_comments",
            "Comment attempts by outcome (published, or the refusal's error code)",
            ["result"],
            registry=registry,
        )
        self.likes = Counter("livemart_room_likes", "Likes received by this process", registry=registry)
        self.moderation = Counter(
            "livemart_room_moderation", "Host moderation actions applied", ["action"], registry=registry
        )
