"""InFlight: what a graceful shutdown waits for, and gives up on past its grace period."""

from __future__ import annotations

import asyncio

from core.in_flight import InFlight


async def held(in_flight: InFlight, release: asyncio.Event, started: asyncio.Event | None = None) -> str:
    async with in_flight.track():
        if started is not None:
            started.set()
        await release.wait()
        return "done"


async def test_waits_until_the_tracked_work_is_done() -> None:
    in_flight, release = InFlight(), asyncio.Event()
    assert await in_flight.wait_idle(0) and len(in_flight) == 0  # nothing to wait for
    task = asyncio.create_task(held(in_flight, release))
    await asyncio.sleep(0)
    assert len(in_flight) == 1
    assert not await in_flight.wait_idle(0.05)  # still running
    asyncio.get_running_loop().call_later(0.05, release.set)
    assert await in_flight.wait_idle(5) and await task == "done"


async def test_nested_tracking_counts_once_per_level() -> None:
    in_flight = InFlight()
    async with in_flight.track():
        async with in_flight.track():
            assert len(in_flight) == 2
        assert len(in_flight) == 1 and not await in_flight.wait_idle(0)
    assert await in_flight.wait_idle(0)


async def test_drain_gives_up_what_is_left_past_the_timeout() -> None:
    in_flight, never = InFlight(), asyncio.Event()
    task = asyncio.create_task(held(in_flight, never))
    await asyncio.sleep(0)
    assert not await in_flight.drain(0.05)
    assert task.cancelled() and len(in_flight) == 0


async def test_drain_told_to_stop_waiting_gives_up_too() -> None:
    in_flight, never, started = InFlight(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(held(in_flight, never, started))
    await started.wait()
    waiting = asyncio.create_task(in_flight.drain(60))
    await asyncio.sleep(0.05)
    waiting.cancel()  # e.g. a second Ctrl+C
    await asyncio.gather(waiting, return_exceptions=True)
    assert task.cancelled()


async def test_cancel_spares_the_caller() -> None:
    in_flight = InFlight()
    async with in_flight.track():
        assert await in_flight.cancel() == 0  # the caller is tracked, and is not cancelled
