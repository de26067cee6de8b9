"""Group-chat limits and tunables, read from the environment in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from realtime.config import Env


@dataclass(frozen=True, kw_only=True)
class GroupSettings:
    """Limits of merchant group chats; every value has a LIVEMART_GROUPS_* variable."""

    #: Members one group may have, the owner included.
    member_cap: int = 2000
    #: Longest message or announcement text, in characters.
    max_text_chars: int = 2000
    #: How long after sending the author (or an admin) may recall a message.
    recall_window_s: float = 120.0
    #: Past this many missed messages a recovering subscribe answers ``recovered: false``
    #: and the client pages through ``GET …/messages`` instead.
    recovery_limit: int = 500
    #: Largest page of ``GET …/messages``.
    page_limit: int = 500
    #: Lifetime of an invite code when the request names none.
    invite_ttl_s: int = 7 * 24 * 3600
    #: Parallel write batches per process (each owns a fixed share of the groups);
    #: None picks one for SQLite (a single writer anyway) and two for PostgreSQL
    #: (docs/groups.md#throughput has the measurements behind two).
    commit_workers: int | None = None
    #: Most sends one write transaction takes.
    max_batch: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GroupSettings:
        env = Env(environ)
        workers = env.integer("LIVEMART_GROUPS_COMMIT_WORKERS", 0)
        return cls(
            member_cap=env.integer("LIVEMART_GROUPS_MEMBER_CAP", 2000),
            max_text_chars=env.integer("LIVEMART_GROUPS_MAX_TEXT_CHARS", 2000),
            recall_window_s=env.number("LIVEMART_GROUPS_RECALL_WINDOW_S", 120.0),
            recovery_limit=env.integer("LIVEMART_GROUPS_RECOVERY_LIMIT", 500),
            page_limit=env.integer("LIVEMART_GROUPS_PAGE_LIMIT", 500),
            invite_ttl_s=env.integer("LIVEMART_GROUPS_INVITE_TTL_S", 7 * 24 * 3600),
            commit_workers=workers or None,
            max_batch=env.integer("LIVEMART_GROUPS_MAX_BATCH", 1000),
        )
