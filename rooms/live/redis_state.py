"""Room state in Redis, shared by every process of the cluster.

Keys of room 7 all live under the hash tag ``{room:7}`` (next to the broker's history
of ``room:7``): ``ctl`` (enforcement hash), ``posters`` (per-user token bucket and last
comment time), ``likes`` and ``comments`` (counters), ``seen`` and ``talk`` (sets of
watching and interacting users), ``recent`` (the snapshot's comments), ``pres`` and
``presx`` (per-process viewer counts and their expiry), ``vstat`` (peak and the
last announced count) and ``deleted`` (offsets of deleted comments).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson

from realtime.errors import ProtocolError
from realtime.redis_batch import Batcher, Command
from realtime.redis_client import RedisClient
from realtime.resp import RespClients

from . import scripts
from .records import ALLOWED, Audience, RoomStatus, RoomView, Verdict
from .state import ControlLoader, RoomState

#: Builds a key in a hash slot: ``key(tag, name)`` (the core's ``redis_key``).
KeyBuilder = Callable[[str, str], str]


class RedisRoomState(RoomState):
    def __init__(
        self, loader: ControlLoader, redis: RedisClient, key: KeyBuilder, *, connections: RespClients
    ) -> None:
        super().__init__(loader)
        self._key = key
        # Every command goes through the batcher: the calls of one loop turn share a
        # round trip (one per node on a Redis Cluster), and a failure is `unavailable`.
        self._batch = Batcher(redis, connections, unavailable="room state unavailable")
        self._admit = self._batch.script(scripts.ADMIT)
        self._load = self._batch.script(scripts.LOAD_CONTROL)
        self._update = self._batch.script(scripts.UPDATE_CONTROL)
        self._view = self._batch.script(scripts.VIEW)
        self._presence = self._batch.script(scripts.PRESENCE)
        self._drop = self._batch.script(scripts.DROP_COMMENT)
        self._push = self._batch.script(scripts.PUSH_COMMENT)

    def _k(self, room_id: str, name: str) -> str:
        return self._key(f"room:{room_id}", name)

    async def _fill_control(self, room_id: str) -> None:
        """Copy the room's enforcement state from SQL, unless another process did."""
        control = await self._load_control(room_id)
        fields: list[str | int] = ["st", control.status, "slow", control.slow_mode_s]
        if control.pinned_product_id is not None:
            fields += ["pin", control.pinned_product_id]
        for user_id, until in control.muted.items():
            fields += [f"m:{user_id}", until]
        for user_id in control.banned:
            fields += [f"b:{user_id}", 1]
        await self._batch.call(*self._load.command([self._k(room_id, "ctl")], fields))

    async def _with_control(
        self, room_id: str, call: Callable[[], Awaitable[Any]], missing: Callable[[Any], bool]
    ) -> Any:
        """Run ``call``; if it found the enforcement hash missing, load it and run it again."""
        for attempt in range(2):
            reply = await call()
            if not missing(reply):
                return reply
            if attempt == 0:
                await self._fill_control(room_id)
        raise ProtocolError("unavailable", f"room {room_id} state could not be loaded")

    # --- enforcement --------------------------------------------------------------

    async def admit_comment(
        self, room_id: str, user_id: str, *, is_host: bool, rate_per_s: float, burst: int
    ) -> Verdict:
        keys = [self._k(room_id, "ctl"), self._k(room_id, "posters")]
        args = [user_id, 1 if is_host else 0, rate_per_s, burst]

        verdict, wait_ms = await self._with_control(
            room_id,
            lambda: self._batch.call(*self._admit.command(keys, args)),
            lambda reply: reply[0] == b"load",
        )
        if verdict == b"ok":
            return ALLOWED
        return Verdict(verdict.decode(), int(wait_ms))

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        key = self._k(room_id, "ctl")
        _, banned = await self._with_control(
            room_id,
            lambda: self._batch.call("HMGET", key, "_v", f"b:{user_id}"),
            lambda reply: reply[0] is None,
        )
        return banned is not None

    async def _change(self, room_id: str, sets: Mapping[str, str | int], deletes: Collection[str]) -> None:
        args: list[str | int] = [len(sets)]
        for name, value in sets.items():
            args += [name, value]
        args += list(deletes)
        key = self._k(room_id, "ctl")
        await self._with_control(
            room_id, lambda: self._batch.call(*self._update.command([key], args)), lambda applied: not applied
        )

    async def set_status(self, room_id: str, status: RoomStatus) -> None:
        await self._change(room_id, {"st": status}, ())

    async def set_pin(self, room_id: str, product_id: str | None) -> None:
        if product_id is None:
            await self._change(room_id, {}, ["pin"])
        else:
            await self._change(room_id, {"pin": product_id}, ())

    async def set_slow_mode(self, room_id: str, seconds: int) -> None:
        await self._change(room_id, {"slow": seconds}, ())

    async def set_mute(self, room_id: str, user_id: str, until_ms: int | None) -> None:
        if until_ms is None:
            await self._change(room_id, {}, [f"m:{user_id}"])
        else:
            await self._change(room_id, {f"m:{user_id}": until_ms}, ())

    async def set_ban(self, room_id: str, user_id: str, banned: bool) -> None:
        if banned:
            await self._change(room_id, {f"b:{user_id}": 1, f"m:{user_id}": 0}, ())
        else:
            await self._change(room_id, {}, [f"b:{user_id}", f"m:{user_id}"])

    # --- what subscribers see -----------------------------------------------------

    async def view(self, room_id: str, comments: int) -> RoomView:
        keys = [self._k(room_id, name) for name in ("ctl", "likes", "recent", "pres", "presx")]
        reply = await self._with_control(
            room_id,
            lambda: self._batch.call(*self._view.command(keys, [comments])),
            lambda r: r[0] == b"load",
        )
        _, status, pin, slow, likes, viewers, recent = reply
        entries = [orjson.loads(item.partition(b"\n")[2]) for item in recent]
        entries.sort(key=lambda c: int(c["off"]))
        return RoomView(
            status=status.decode(),
            pinned_product_id=pin.decode() or None,
            slow_mode_s=int(slow),
            likes=int(likes),
            viewers=int(viewers),
            comments=entries,
        )

    async def push_comment(self, room_id: str, comment: Mapping[str, Any], keep: int) -> None:
        keys = [self._k(room_id, "recent"), self._k(room_id, "deleted")]
        entry = b"%d\n%s" % (int(comment["off"]), orjson.dumps(comment))
        await self._batch.call(*self._push.command(keys, [entry, keep]))

    async def drop_comment(self, room_id: str, off: int) -> None:
        keys = [self._k(room_id, "recent"), self._k(room_id, "deleted")]
        await self._batch.call(*self._drop.command(keys, [off]))

    # --- aggregates ---------------------------------------------------------------

    async def add_likes(self, counts: Mapping[str, int]) -> dict[str, int]:
        if not counts:
            return {}
        totals = await self._batch.call_each(
            [("INCRBY", self._k(room_id, "likes"), count) for room_id, count in counts.items()]
        )
        return {
            room_id: int(total)
            for room_id, total in zip(counts, totals, strict=True)
            if not isinstance(total, BaseException)
        }

    async def record_activity(
        self,
        *,
        comments: Mapping[str, int],
        viewers: Mapping[str, Collection[str]],
        interacting: Mapping[str, Collection[str]],
    ) -> set[str]:
        # A room's updates share its slot, so they reach its master (or not) together.
        rooms = list(comments)
        commands: list[Command] = [
            ("INCRBY", self._k(room_id, "comments"), comments[room_id]) for room_id in rooms
        ]
        for name, sets in (("seen", viewers), ("talk", interacting)):
            for room_id, users in sets.items():
                if users:
                    rooms.append(room_id)
                    commands.append(("SADD", self._k(room_id, name), *users))
        replies = await self._batch.call_each(commands)
        return {
            room_id for room_id, reply in zip(rooms, replies, strict=True) if isinstance(reply, BaseException)
        }

    async def report_presence(
        self, process: str, counts: Mapping[str, int], *, ttl_ms: int, interval_ms: int
    ) -> dict[str, int]:
        if not counts:
            return {}
        replies = await self._batch.call_each(
            [
                self._presence.command(
                    [self._k(room_id, name) for name in ("pres", "presx", "vstat")],
                    [process, count, ttl_ms, interval_ms],
                )
                for room_id, count in counts.items()
            ]
        )
        reached = [
            (room_id, r)
            for room_id, r in zip(counts, replies, strict=True)
            if not isinstance(r, BaseException)
        ]
        if not reached:  # Redis is away: say so (rooms on a master that is away wait for the next tick)
            raise ProtocolError("unavailable", "room state unavailable")
        return {room_id: int(total) for room_id, (announce, total) in reached if announce}

    async def audience(self, room_id: str) -> Audience:
        peak, seen, talk, comments, likes = await self._batch.call_many(
            [
                ("HGET", self._k(room_id, "vstat"), "peak"),
                ("SMEMBERS", self._k(room_id, "seen")),
                ("SMEMBERS", self._k(room_id, "talk")),
                ("GET", self._k(room_id, "comments")),
                ("GET", self._k(room_id, "likes")),
            ]
        )
        return Audience(
            peak_viewers=int(peak or 0),
            viewer_ids=frozenset(user.decode() for user in seen),
            interacting_ids=frozenset(user.decode() for user in talk),
            comments=int(comments or 0),
            likes=int(likes or 0),
        )

    async def forget(self, room_id: str) -> None:
        await self._batch.call("DEL", self._k(room_id, "posters"))
