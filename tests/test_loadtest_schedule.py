"""The open-loop scheduler keeps the clock's pace even when nothing ever answers."""

from __future__ import annotations

import asyncio
import time

from loadtest.schedule import message_count, run_open_loop


def test_message_count_covers_the_half_open_window() -> None:
    assert message_count(10, 1) == 10
    assert message_count(2.5, 1) == 3  # at 0, 0.4, 0.8
    assert message_count(3, 10) == 30  # no float drift into a 31st message
    assert message_count(0.5, 1) == 1
    assert message_count(1, 0) == 0


async def test_sends_follow_the_clock_while_replies_stall() -> None:
    rate, duration = 200.0, 0.5
    never = asyncio.get_running_loop().create_future()  # a server that never replies
    fired: list[tuple[int, float, float]] = []
    waiting: set[asyncio.Task[None]] = set()

    async def send_and_wait_for_reply() -> None:
        await never

    def fire(k: int, due: float) -> None:
        fired.append((k, due, time.time()))
        task = asyncio.create_task(send_and_wait_for_reply())
        waiting.add(task)

    start = time.time() + 0.05
    count = await run_open_loop(rate=rate, duration=duration, start=start, fire=fire)
    finished = time.time()

    assert count == 100 == len(fired)
    assert [k for k, _, _ in fired] == list(range(100))
    assert all(not task.done() for task in waiting)  # every reply is still outstanding
    for k, due, at in fired:
        assert due == start + k / rate
        assert -0.002 <= at - due < 0.1  # never early, and not held back by the stalls
    assert finished - start < duration + 0.1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_late_generator_catches_up_instead_of_shifting_the_schedule() -> None:
    fired: list[tuple[int, float]] = []
    start = time.time() - 0.25  # already a quarter second behind
    await run_open_loop(rate=100, duration=0.5, start=start, fire=lambda k, due: fired.append((k, due)))
    assert len(fired) == 50
    # the overdue quarter fired at once; the due times still follow the original schedule
    assert fired[-1][1] == start + 49 / 100


async def test_workers_split_one_schedule_without_overlap() -> None:
    seen: list[int] = []
    start = time.time()
    await asyncio.gather(
        *(
            run_open_loop(
                rate=1000, duration=0.05, start=start, fire=lambda k, due: seen.append(k), first=w, step=3
            )
            for w in range(3)
        )
    )
    assert sorted(seen) == list(range(50))
