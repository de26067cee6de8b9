"""Token buckets: the one rate limiter used for commands, comments and sampling."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; ``take`` never blocks."""

    __slots__ = ("_stamp", "capacity", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, *, now: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._stamp = time.monotonic() if now is None else now

    def refill(self, now: float | None = None) -> float:
        """Add what accrued since the last call; returns the tokens available."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self._stamp = now
        return self.tokens

    def take(self, amount: float = 1.0, *, now: float | None = None) -> bool:
        if self.refill(now) >= amount:
            self.tokens -= amount
            return True
        return False

    def retry_after(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens will be available."""
        missing = amount - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate
