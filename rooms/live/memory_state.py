"""Room state in this process only (the embedded mode), with totals written to SQL."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.ratelimit import TokenBucket

from .records import ALLOWED, Audience, Control, RoomStatus, RoomView, Verdict
from .repository import RoomRepository
from .state import ControlLoader, RoomState


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Enforcement:
    status: RoomStatus
    pinned_product_id: str | None
    slow_mode_s: int
    muted: dict[str, int]
    banned: set[str]

    @classmethod
    def of(cls, control: Control) -> _Enforcement:
        return cls(
            control.status,
            control.pinned_product_id,
            control.slow_mode_s,
            dict(control.muted),
            set(control.banned),
        )


@dataclass(slots=True)
class _Poster:
    bucket: TokenBucket
    last_ms: int = 0


@dataclass(slots=True)
class _Totals:
    likes: int
    comments: int
    peak_viewers: int
    viewer_ids: set[str]
    interacting_ids: set[str]
    #: Members added since the last write to SQL.
    new_viewers: set[str] = field(default_factory=set)
    new_interacting: set[str] = field(default_factory=set)
    dirty: bool = False


@dataclass(slots=True)
class _Presence:
    #: Process -> (subscriber count, epoch ms the report lapses).
    reports: dict[str, tuple[int, int]] = field(default_factory=dict)
    announced: int | None = None
    announced_at_ms: int = 0


class MemoryRoomState(RoomState):
    """Dicts guarded by the event loop: every method is atomic between its awaits."""

    def __init__(self, loader: ControlLoader, repository: RoomRepository) -> None:
        super().__init__(loader)
        self._repository = repository
        self._enforcement: dict[str, _Enforcement] = {}
        self._posters: dict[str, dict[str, _Poster]] = {}
        self._totals: dict[str, _Totals] = {}
        self._presence: dict[str, _Presence] = {}
        self._recent: dict[str, list[dict[str, Any]]] = {}
        self._deleted: dict[str, set[int]] = {}

    async def _control(self, room_id: str) -> _Enforcement:
        state = self._enforcement.get(room_id)
        if state is None:
            control = await self._load_control(room_id)
            # Another caller may have loaded it while we awaited; the first one wins.
            state = self._enforcement.setdefault(room_id, _Enforcement.of(control))
        return state

    async def _room_totals(self, room_id: str) -> _Totals:
        totals = self._totals.get(room_id)
        if totals is None:
            stored = await self._repository.load_totals(room_id)
            totals = self._totals.setdefault(
                room_id,
                _Totals(
                    stored.likes,
                    stored.comments,
                    stored.peak_viewers,
                    set(stored.viewer_ids),
                    set(stored.interacting_ids),
                ),
            )
        return totals

    # --- enforcement --------------------------------------------------------------

    async def admit_comment(
        self, room_id: str, user_id: str, *, is_host: bool, rate_per_s: float, burst: int
    ) -> Verdict:
        control = await self._control(room_id)
        now = _now_ms()
        if control.status == "ended":
            return Verdict("ended")
        if not is_host:
            if user_id in control.banned:
                return Verdict("banned")
            until = control.muted.get(user_id)
            if until is not None and (until == 0 or until > now):
                return Verdict("muted", 0 if until == 0 else until - now)
        posters = self._posters.setdefault(room_id, {})
        poster = posters.get(user_id)
        if poster is None:
            poster = posters[user_id] = _Poster(TokenBucket(rate_per_s, burst))
        slow_ms = control.slow_mode_s * 1000
        if not is_host and slow_ms and now - poster.last_ms < slow_ms:
            return Verdict("slow", poster.last_ms + slow_ms - now)
        if not poster.bucket.take():
            return Verdict("rate", max(1, int(poster.bucket.retry_after() * 1000 + 0.999)))
        poster.last_ms = now
        return ALLOWED

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        return user_id in (await self._control(room_id)).banned

    async def set_status(self, room_id: str, status: RoomStatus) -> None:
        (await self._control(room_id)).status = status

    async def set_pin(self, room_id: str, product_id: str | None) -> None:
        (await self._control(room_id)).pinned_product_id = product_id

    async def set_slow_mode(self, room_id: str, seconds: int) -> None:
        (await self._control(room_id)).slow_mode_s = seconds

    async def set_mute(self, room_id: str, user_id: str, until_ms: int | None) -> None:
        control = await self._control(room_id)
        if until_ms is None:
            control.muted.pop(user_id, None)
        else:
            control.muted[user_id] = until_ms

    async def set_ban(self, room_id: str, user_id: str, banned: bool) -> None:
        control = await self._control(room_id)
        if banned:
            control.banned.add(user_id)
            control.muted[user_id] = 0
        else:
            control.banned.discard(user_id)
            control.muted.pop(user_id, None)

    # --- what subscribers see -----------------------------------------------------

    async def view(self, room_id: str, comments: int) -> RoomView:
        control = await self._control(room_id)
        totals = await self._room_totals(room_id)
        recent = self._recent.get(room_id, [])
        return RoomView(
            status=control.status,
            pinned_product_id=control.pinned_product_id,
            slow_mode_s=control.slow_mode_s,
            likes=totals.likes,
            viewers=self._viewers(room_id, _now_ms()),
            comments=sorted(recent, key=lambda c: int(c["off"]))[-comments:] if comments else [],
        )

    async def push_comment(self, room_id: str, comment: Mapping[str, Any], keep: int) -> None:
        if comment["off"] in self._deleted.get(room_id, ()):
            return
        recent = self._recent.setdefault(room_id, [])
        recent.append(dict(comment))
        del recent[:-keep]

    async def drop_comment(self, room_id: str, off: int) -> None:
        self._deleted.setdefault(room_id, set()).add(off)
        recent = self._recent.get(room_id)
        if recent:
            recent[:] = [c for c in recent if c["off"] != off]

    # --- aggregates ---------------------------------------------------------------

    async def add_likes(self, counts: Mapping[str, int]) -> dict[str, int]:
        result = {}
        for room_id, count in counts.items():
            totals = await self._room_totals(room_id)
            totals.likes += count
            totals.dirty = True
            result[room_id] = totals.likes
        return result

    async def record_activity(
        self,
        *,
        comments: Mapping[str, int],
        viewers: Mapping[str, Collection[str]],
        interacting: Mapping[str, Collection[str]],
    ) -> set[str]:
        for room_id, count in comments.items():
            totals = await self._room_totals(room_id)
            totals.comments += count
            totals.dirty = True
        for room_id, users in viewers.items():
            totals = await self._room_totals(room_id)
            fresh = set(users) - totals.viewer_ids
            totals.viewer_ids |= fresh
            totals.new_viewers |= fresh
            totals.dirty = totals.dirty or bool(fresh)
        for room_id, users in interacting.items():
            totals = await self._room_totals(room_id)
            fresh = set(users) - totals.interacting_ids
            totals.interacting_ids |= fresh
            totals.new_interacting |= fresh
            totals.dirty = totals.dirty or bool(fresh)
        return set()

    def _viewers(self, room_id: str, now: int) -> int:
        presence = self._presence.get(room_id)
        if presence is None:
            return 0
        for process, (_, lapses) in list(presence.reports.items()):
            if lapses <= now:
                del presence.reports[process]
        return sum(count for count, _ in presence.reports.values())

    async def report_presence(
        self, process: str, counts: Mapping[str, int], *, ttl_ms: int, interval_ms: int
    ) -> dict[str, int]:
        now = _now_ms()
        announce = {}
        for room_id, count in counts.items():
            presence = self._presence.setdefault(room_id, _Presence())
            if count > 0:
                presence.reports[process] = (count, now + ttl_ms)
            else:
                presence.reports.pop(process, None)
            total = self._viewers(room_id, now)
            totals = await self._room_totals(room_id)
            if total > totals.peak_viewers:
                totals.peak_viewers = total
                totals.dirty = True
            if total != presence.announced and now - presence.announced_at_ms >= interval_ms:
                presence.announced, presence.announced_at_ms = total, now
                announce[room_id] = total
        return announce

    async def audience(self, room_id: str) -> Audience:
        totals = await self._room_totals(room_id)
        return Audience(
            peak_viewers=totals.peak_viewers,
            viewer_ids=frozenset(totals.viewer_ids),
            interacting_ids=frozenset(totals.interacting_ids),
            comments=totals.comments,
            likes=totals.likes,
        )

    async def persist(self) -> None:
        for room_id, totals in list(self._totals.items()):
            if not totals.dirty:
                continue
            new_viewers, new_interacting = totals.new_viewers, totals.new_interacting
            totals.new_viewers, totals.new_interacting, totals.dirty = set(), set(), False
            try:
                await self._repository.save_totals(
                    room_id,
                    likes=totals.likes,
                    comments=totals.comments,
                    peak_viewers=totals.peak_viewers,
                    new_viewers=new_viewers,
                    new_interacting=new_interacting,
                )
            except BaseException:
                totals.new_viewers |= new_viewers
                totals.new_interacting |= new_interacting
                totals.dirty = True
                raise

    async def forget(self, room_id: str) -> None:
        self._posters.pop(room_id, None)
