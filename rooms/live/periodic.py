"""A background job run at a fixed interval, which survives its own failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("livemart.rooms")


class Periodic:
    """Runs ``action`` every ``interval_s`` seconds between :meth:`start` and :meth:`stop`.

    A failing run is logged and the next one happens on time: a Redis or database
    blip must not end presence refreshes or like flushes for the life of the process.
    """

    def __init__(self, name: str, interval_s: float, action: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval_s = interval_s
        self._action = action
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._action()
            except Exception:
                log.exception("%s failed; retrying in %.2fs", self.name, self.interval_s)
            # A slow run delays the next one instead of causing a burst of catch-up runs.
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    async def stop(self) -> None:
        """Cancel the loop (a run in progress is cancelled too)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
