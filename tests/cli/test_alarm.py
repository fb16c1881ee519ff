"""Alarm: a sleep until a deadline that other tasks bring forward (torc_cli/alarm.py), on
trio's MockClock: virtual time, no real sleeps."""

from __future__ import annotations

import math

import trio
import trio.testing

from torc_cli.alarm import Alarm


async def test_sleeps_until_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    alarm = Alarm()
    start = trio.current_time()
    await alarm.sleep_until(start + 7)
    assert trio.current_time() - start == 7


async def test_an_earlier_deadline_wakes_it_then(autojump_clock: trio.testing.MockClock) -> None:
    alarm = Alarm()
    start = trio.current_time()
    woke: list[float] = []

    async def sleeper() -> None:
        await alarm.sleep_until(math.inf)
        woke.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.sleep(1)
        alarm.bring_forward(start + 5)
        alarm.bring_forward(start + 9)  # later than the one set: no effect
        await trio.sleep(2)
        alarm.bring_forward(start + 4)  # earlier again: the sleeper wakes then
    assert woke == [4]


async def test_no_sleeper_no_effect(autojump_clock: trio.testing.MockClock) -> None:
    alarm = Alarm()
    alarm.bring_forward(trio.current_time())  # nobody sleeps: nothing to wake, nothing kept
    start = trio.current_time()
    await alarm.sleep_until(start + 3)
    assert trio.current_time() - start == 3
