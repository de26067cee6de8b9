"""Coalescing of keyframe requests towards one publisher."""

import asyncio
from collections.abc import Callable


class KeyframeThrottle:
    """Lets at most one keyframe request per `interval` seconds reach the publisher.

    Two kinds of callers: `request()` is a one-off (a viewer's PLI) and is deferred to
    the end of the quiet period rather than lost; `request_if_due()` comes from a
    condition re-checked on every frame (a viewer waiting for a keyframe), so it is
    simply skipped inside the quiet period and asked again by the next frame. Deferring
    those too would send a second keyframe after the first one already served them.
    """

    def __init__(self, send: Callable[[], None], interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._send = send
        self._interval = interval
        self._next_allowed = float("-inf")
        """Loop time at which the quiet period after the last request ends."""
        self._pending: asyncio.TimerHandle | None = None
        self.sent = 0
        """Requests actually passed to `send`."""

    def request(self) -> None:
        if self._pending is not None or self.request_if_due():
            return
        self._pending = asyncio.get_running_loop().call_at(self._next_allowed, self._fire)

    def request_if_due(self) -> bool:
        """Send now if the quiet period is over; return whether a request went out."""
        if self._pending is not None:
            return False
        if asyncio.get_running_loop().time() < self._next_allowed:
            return False
        self._fire()
        return True

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _fire(self) -> None:
        self._pending = None
        self._next_allowed = asyncio.get_running_loop().time() + self._interval
        self.sent += 1
        self._send()
