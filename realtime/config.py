"""Settings for the transport, read from the environment in one place.

Options are keyword-only, grouped, with units in their names. :class:`Env` raises
errors that name the offending key, so a typo in a deployment fails at start-up
with a message an operator can act on.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the key."""


class Env:
    """Typed reads from an environment mapping."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._environ.get(key)
        return default if value is None or value == "" else value

    def integer(self, key: str, default: int) -> int:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {raw!r}") from None

    def number(self, key: str, default: float) -> float:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None

    def items(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self.text(key)
        if raw is None:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./livemart.db"
#: Shortest token secret accepted: HS256 wants a key at least as long as its output.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the transport needs; domains keep their own settings."""

    #: Redis URL(s); None runs the embedded in-process broker.
    redis_url: str | None = None
    #: Prefix of every Redis key and pub/sub channel this deployment uses.
    redis_prefix: str = "lm:"
    database_url: str = DEFAULT_DATABASE_URL
    #: SQL connections each process keeps (and may add as many again under load).
    database_pool_size: int = 10
    #: HMAC key for access tokens.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: True when ``secret`` was generated because LIVEMART_SECRET was unset.
    secret_generated: bool = False
    #: Key for the server-to-server API; None turns that API off.
    api_key: str | None = None

    #: Largest WebSocket frame accepted from a client (close 1009 above it).
    max_frame_bytes: int = 64 * 1024
    #: Largest HTTP request body accepted.
    max_body_bytes: int = 64 * 1024
    #: Bytes a client may have waiting in its outgoing buffer before it is cut as slow.
    write_buffer_limit_bytes: int = 1024 * 1024
    #: Pushes on one channel are coalesced for at most this long before a flush.
    flush_interval_s: float = 0.05
    #: Channels with at least ``large_channel_subscribers`` local subscribers flush at
    #: this longer interval instead: each flush costs one socket write per subscriber,
    #: so big audiences get bigger batches (still well inside a 250 ms p99).
    large_channel_flush_interval_s: float = 0.1
    large_channel_subscribers: int = 1000
    #: Commands a connection may send per second (sustained) and in a burst.
    command_rate_per_s: float = 50.0
    command_burst: int = 100
    #: Commands queued on one connection before it is closed for flooding.
    command_queue_limit: int = 256
    #: Open WebSocket connections allowed from one IP address (0 = no limit).
    max_connections_per_ip: int = 0
    #: Open WebSocket connections allowed per signed-in user (0 = no limit).
    max_connections_per_user: int = 0
    #: Browser Origins allowed to open WebSockets and to call the API cross-origin (CORS).
    #: Empty: WebSockets from any Origin, and no CORS headers (same-origin pages only).
    allowed_origins: tuple[str, ...] = ()

    #: A connection silent for ``ping_interval_s`` is pinged; one silent for
    #: ``idle_timeout_s`` (no frame, no pong) is closed with 4002, freeing its slot.
    ping_interval_s: float = 20.0
    idle_timeout_s: float = 60.0

    #: Bounded per-channel history used for recovery.
    history_size: int = 300
    history_ttl_s: int = 24 * 3600

    #: How long SIGTERM waits for connections to drain before cancelling the rest.
    shutdown_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        secret = env.text("LIVEMART_SECRET")
        extra: dict[str, object] = {}
        if secret is None:
            extra["secret_generated"] = True
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"LIVEMART_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256")
        else:
            extra["secret"] = secret
        return cls(
            redis_url=env.text("REDIS_URL"),
            redis_prefix=env.text("LIVEMART_REDIS_PREFIX", "lm:") or "lm:",
            database_url=env.text("DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL,
            api_key=env.text("LIVEMART_API_KEY"),
            database_pool_size=env.integer("LIVEMART_DB_POOL_SIZE", 10),
            max_frame_bytes=env.integer("LIVEMART_MAX_FRAME_BYTES", 64 * 1024),
            max_body_bytes=env.integer("LIVEMART_MAX_BODY_BYTES", 64 * 1024),
            write_buffer_limit_bytes=env.integer("LIVEMART_WRITE_BUFFER_BYTES", 1024 * 1024),
            flush_interval_s=env.number("LIVEMART_FLUSH_INTERVAL_S", 0.05),
            large_channel_flush_interval_s=env.number("LIVEMART_LARGE_FLUSH_INTERVAL_S", 0.1),
            large_channel_subscribers=env.integer("LIVEMART_LARGE_CHANNEL_SUBSCRIBERS", 1000),
            command_queue_limit=env.integer("LIVEMART_COMMAND_QUEUE", 256),
            command_rate_per_s=env.number("LIVEMART_COMMAND_RATE", 50.0),
            command_burst=env.integer("LIVEMART_COMMAND_BURST", 100),
            max_connections_per_ip=env.integer("LIVEMART_MAX_CONNECTIONS_PER_IP", 0),
            max_connections_per_user=env.integer("LIVEMART_MAX_CONNECTIONS_PER_USER", 0),
            allowed_origins=env.items("LIVEMART_ALLOWED_ORIGINS"),
            ping_interval_s=env.number("LIVEMART_PING_INTERVAL_S", 20.0),
            idle_timeout_s=env.number("LIVEMART_IDLE_TIMEOUT_S", 60.0),
            history_size=env.integer("LIVEMART_HISTORY_SIZE", 300),
            history_ttl_s=env.integer("LIVEMART_HISTORY_TTL_S", 24 * 3600),
            shutdown_timeout_s=env.number("LIVEMART_SHUTDOWN_TIMEOUT_S", 10.0),
            **extra,  # type: ignore[arg-type]
        )
