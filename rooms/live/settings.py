"""Live-room settings, read from the environment in one place.

Transport settings (history size and TTL, flush interval) stay in
:class:`realtime.config.Settings`; these are the room domain's own knobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from realtime.config import ConfigError, Env


@dataclass(frozen=True, kw_only=True)
class RoomSettings:
    """What a room allows and how often its aggregates are pushed."""

    #: Longest comment, in characters (Unicode code points) after trimming.
    comment_max_len: int = 300
    #: Comments one user may post per second in one room (sustained), and in a burst.
    comment_rate_per_s: float = 1.0
    comment_burst: int = 5
    #: Words that make a comment refused with ``forbidden`` (matched case-insensitively
    #: as substrings, so they also catch words in scripts written without spaces).
    blocked_words: tuple[str, ...] = ()
    #: Viewers' comments each viewer is sent per second at most (per channel and
    #: process, the hub's sampled lane); host comments and commerce events are exempt.
    comment_budget_per_s: float = 20.0
    #: A process's viewers count for this long after its last presence refresh, so a
    #: crashed process's viewers drop out of the count within this bound.
    presence_ttl_s: float = 10.0
    #: How often each process refreshes its presence and may push ``viewers {count}``.
    viewers_interval_s: float = 1.0
    #: How often likes and audience counters are flushed (and ``likes {total}`` pushed).
    like_flush_interval_s: float = 0.1
    #: Embedded mode: how often in-process counters are written to SQL.
    persist_interval_s: float = 5.0
    #: Comments kept for the subscribe snapshot.
    snapshot_comments: int = 50
    #: How long the per-process cache of room records (title, host, status) is trusted.
    room_cache_ttl_s: float = 1.0
    #: Longest room title, in characters.
    title_max_len: int = 120

    def __post_init__(self) -> None:
        checks = {
            "LIVEMART_COMMENT_MAX_LEN": self.comment_max_len > 0,
            "LIVEMART_COMMENT_RATE": self.comment_rate_per_s > 0,
            "LIVEMART_COMMENT_BURST": self.comment_burst >= 1,
            "LIVEMART_COMMENT_BUDGET": self.comment_budget_per_s > 0,
            "LIVEMART_PRESENCE_TTL_S": self.presence_ttl_s > 2 * self.viewers_interval_s,
            "LIVEMART_VIEWERS_INTERVAL_S": self.viewers_interval_s > 0,
            "LIVEMART_LIKE_FLUSH_S": self.like_flush_interval_s > 0,
            "LIVEMART_PERSIST_INTERVAL_S": self.persist_interval_s > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{key} is out of range")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RoomSettings:
        env = Env(environ)
        return cls(
            comment_max_len=env.integer("LIVEMART_COMMENT_MAX_LEN", 300),
            comment_rate_per_s=env.number("LIVEMART_COMMENT_RATE", 1.0),
            comment_burst=env.integer("LIVEMART_COMMENT_BURST", 5),
            blocked_words=env.items("LIVEMART_BLOCKED_WORDS"),
            comment_budget_per_s=env.number("LIVEMART_COMMENT_BUDGET", 20.0),
            presence_ttl_s=env.number("LIVEMART_PRESENCE_TTL_S", 10.0),
            viewers_interval_s=env.number("LIVEMART_VIEWERS_INTERVAL_S", 1.0),
            like_flush_interval_s=env.number("LIVEMART_LIKE_FLUSH_S", 0.1),
            persist_interval_s=env.number("LIVEMART_PERSIST_INTERVAL_S", 5.0),
        )
