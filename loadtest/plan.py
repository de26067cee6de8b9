"""What a run will do, fixed before any worker starts, so every worker sees the same plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest.frames import Protocol


@dataclass(frozen=True)
class Member:
    """One generator connection: a user watching a room or sitting in a group."""

    user_id: str
    name: str
    target: str | int
    """Room or group id exactly as the server returned it (used in ops)."""
    channel: str
    """`room:<id>` or `group:<id>`."""


@dataclass(frozen=True)
class Plan:
    scenario: str
    http_url: str
    ws_url: str
    protocol: Protocol
    secret: str
    api_key: str | None
    rate: float
    """Messages per second, all workers together."""
    duration: float
    ramp: float
    drain: float
    workers: int
    run_id: str
    """Prefix of user ids, idempotency keys and client message ids of this run."""
    members: tuple[Member, ...]
    token_ttl_s: int
    """Lifetime of the tokens workers mint: the whole run and then some."""
    rooms: tuple[str | int, ...] = ()
    """Publish targets of the `viewers` scenario."""
    sale_id: str | int | None = None
    stock: int = 0
    per_user_limit: int = 1
    sample_every: int = 1
    """Latency is recorded for every n-th delivery of a counting connection (counts stay exact)."""
    setup_errors: dict[str, int] = field(default_factory=dict)
    """Setup calls refused for single members (e.g. group joins); they are left out."""

    def members_of(self, worker: int) -> tuple[Member, ...]:
        """The connections worker `worker` opens: every `workers`-th member."""
        return self.members[worker :: self.workers]
