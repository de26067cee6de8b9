"""Posting a comment: rules, the shared admission check, publish, remember.

Viewers' comments travel on the sampled lane with their author, so in a huge room
each viewer gets a fair sample within the budget while authors always see their own;
the host's comments travel on the priority lane and reach everyone.
"""

from __future__ import annotations

import logging
import secrets
import time

from realtime.auth import Identity
from realtime.errors import ProtocolError
from realtime.node import Node

from .activity import Activity
from .directory import RoomDirectory
from .metrics import RoomMetrics
from .records import Verdict
from .rules import CommentRules
from .settings import RoomSettings
from .state import RoomState

log = logging.getLogger("livemart.rooms")


def refusal_error(verdict: Verdict) -> ProtocolError:
    """The contract error for a refused comment."""
    wait = f"{verdict.wait_ms / 1000:.1f}s"
    match verdict.refusal:
        case "ended":
            return ProtocolError("ended", "the room has ended")
        case "banned":
            return ProtocolError("banned", "you are banned from this room")
        case "muted":
            more = f" for {wait} more" if verdict.wait_ms else ""
            return ProtocolError("muted", f"the host muted you in this room{more}")
        case "slow":
            return ProtocolError("rate_limited", f"slow mode is on: wait {wait}")
        case _:
            return ProtocolError("rate_limited", f"too many comments: wait {wait}")


class CommentPoster:
    def __init__(
        self,
        *,
        node: Node,
        directory: RoomDirectory,
        state: RoomState,
        activity: Activity,
        settings: RoomSettings,
        metrics: RoomMetrics,
    ) -> None:
        self._node = node
        self._directory = directory
        self._state = state
        self._activity = activity
        self._settings = settings
        self._metrics = metrics
        self.rules = CommentRules(max_len=settings.comment_max_len, blocked_words=settings.blocked_words)

    async def post(self, identity: Identity, room_id: str, text: str) -> int:
        """Publish the comment; returns its offset in the room's stream."""
        try:
            user_id = identity.require_user()
            text = self.rules.clean(text)
            room = await self._directory.get(room_id)
            is_host = user_id == room.host_id
            verdict = await self._state.admit_comment(
                room_id,
                user_id,
                is_host=is_host,
                rate_per_s=self._settings.comment_rate_per_s,
                burst=self._settings.comment_burst,
            )
            if not verdict.allowed:
                raise refusal_error(verdict)
        except ProtocolError as exc:
            self._metrics.comments.labels(exc.code).inc()
            raise
        comment = {
            "id": secrets.token_hex(8),
            "user_id": user_id,
            "name": identity.name,
            "text": text,
            "ts": round(time.time(), 3),
        }
        position = await self._node.publish(
            f"room:{room_id}",
            "comment",
            comment,
            lane="priority" if is_host else "sampled",
            author=user_id,
        )
        self._metrics.comments.labels("published").inc()
        self._activity.comment(room_id, user_id)
        # In the snapshot's list before the author hears back (one batched Redis call).
        # The comment is out either way: a failure here must not tell the author to
        # retry, or the retry would publish it twice. It only misses late joiners'
        # snapshots (history still has it).
        try:
            await self._state.push_comment(
                room_id, {"off": position.offset, **comment}, keep=self._settings.snapshot_comments
            )
        except ProtocolError as exc:
            log.warning("comment %d in room %s left out of the snapshot: %s", position.offset, room_id, exc)
        return position.offset
