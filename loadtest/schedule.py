"""Open-loop arrival schedule: sends happen when the clock says, not when replies come back.

A closed loop (send, wait for the reply, send again) slows down exactly when the server
stalls, so the stall never shows in the numbers (coordinated omission). Here message `k` is
due at ``start + k / rate``; it is fired at that instant, or at once if the generator is
already late, and the lateness is reported so a saturated generator cannot hide either.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

YIELD_EVERY = 64
"""Fires in a row before giving the loop a turn, so receivers run while catching up."""


def message_count(rate: float, duration: float) -> int:
    """How many messages fall in [0, duration) at `rate` per second."""
    return max(0, math.ceil(rate * duration - 1e-9))


async def run_open_loop(
    *,
    rate: float,
    duration: float,
    start: float,
    fire: Callable[[int, float], None],
    first: int = 0,
    step: int = 1,
    clock: Callable[[], float] = time.time,
) -> int:
    """Call ``fire(k, due)`` for k = first, first + step, ... below the message count.

    `fire` must not block: it starts the send (typically as a task) and returns. Workers
    share one schedule by taking every `step`-th index from their own `first`. Returns the
    number of messages fired.
    """
    total = message_count(rate, duration)
    fired = 0
    in_a_row = 0
    for k in range(first, total, step):
        due = start + k / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
            in_a_row = 0
        elif in_a_row >= YIELD_EVERY:
            await asyncio.sleep(0)
            in_a_row = 0
        fire(k, due)
        fired += 1
        in_a_row += 1
    return fired
