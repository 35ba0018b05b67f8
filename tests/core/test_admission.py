"""Admission: the measured throughput decides which generations start (a clock the test moves)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.admission import Admission, AdmissionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, timeout_s: float = 10.0, half_life_s: float = 1e9) -> Admission:
    return Admission(AdmissionConfig(share=0.5, half_life_s=half_life_s), timeout_s, clock)


def finish(adm: Admission, clock: Clock, seconds: float, together: int = 1) -> None:
    """``together`` generations run side by side for ``seconds`` (one batch)."""
    with contextlib.ExitStack() as stack:
        for _ in range(together):
            stack.enter_context(adm.generation())
        clock.now += seconds


def test_unmeasured_it_tries_one_generation_at_a_time() -> None:
    adm = admission(Clock())
    assert adm.predicted_s() is None and adm.admits() and adm.room() == 1
    with adm.generation():  # the first measures the model; a storm at start-up waits for it
        assert not adm.admits() and adm.room() == 0


async def test_a_storm_at_start_up_waits_for_the_first_measurement_then_starts_what_fits() -> None:
    clock = Clock()
    adm = admission(clock, timeout_s=10.0)  # target 5 s; waits up to 5 s for room
    first = adm.generation()
    first.__enter__()
    waiting = [asyncio.create_task(adm.wait_for_room()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiting)  # queued, not refused, not started
    clock.now += 2.0
    first.__exit__(None, None, None)  # measured: 2 s per generation, 2 fit at once
    assert await asyncio.gather(*waiting) == [True, True, True]  # nothing in flight: all may go...
    with adm.generation(), adm.generation():  # ... and whoever starts first takes the places
        assert not adm.admits()


async def test_a_waiter_is_refused_when_no_room_comes_in_time() -> None:
    clock = Clock()
    adm = Admission(AdmissionConfig(share=0.9, half_life_s=1e9), 1.0, clock)  # waits 0.1 s
    finish(adm, clock, 0.8)
    with adm.generation():
        assert not await adm.wait_for_room()
    assert await adm.wait_for_room()  # idle again


def test_a_batch_counts_as_its_throughput_not_its_latency() -> None:
    clock = Clock()
    adm = admission(clock)
    finish(adm, clock, 4.0, together=8)  # 8 generations in 4 s of model time
    assert adm.per_generation_s() == pytest.approx(0.5)
    assert adm.predicted_s() == pytest.approx(0.5)  # nothing in flight: one more takes 0.5 s


def test_it_refuses_what_would_finish_after_its_share_of_the_timeout() -> None:
    clock = Clock()
    adm = admission(clock, timeout_s=10.0)  # target 5 s
    finish(adm, clock, 2.0, together=2)  # 1 s per generation
    held = [adm.generation() for _ in range(4)]
    for running in held:
        running.__enter__()
    assert adm.in_flight == 4 and adm.predicted_s() == pytest.approx(5.0) and adm.admits()
    fifth = adm.generation()
    fifth.__enter__()
    assert adm.predicted_s() == pytest.approx(6.0) and not adm.admits()
    for running in [*held, fifth]:
        running.__exit__(None, None, None)
    assert adm.in_flight == 0


def test_a_failed_generation_adds_busy_time_and_no_throughput() -> None:
    clock = Clock()
    adm = admission(clock)
    finish(adm, clock, 1.0)
    with pytest.raises(TimeoutError), adm.generation():
        clock.now += 3.0
        raise TimeoutError
    assert adm.in_flight == 0
    assert adm.per_generation_s() == pytest.approx(4.0)  # 4 s of model time, one generation finished


def test_old_measurements_fade_so_a_machine_that_got_busy_is_seen() -> None:
    clock = Clock()
    adm = admission(clock, half_life_s=10.0)
    for _ in range(20):
        finish(adm, clock, 0.1)  # a quiet machine
    assert adm.per_generation_s() == pytest.approx(0.1, rel=0.02)
    for _ in range(40):
        finish(adm, clock, 1.0)  # then a CPU hog starts beside it: 4 half-lives later, it is seen
    assert adm.per_generation_s() == pytest.approx(1.0, rel=0.1)


def test_an_idle_model_is_always_tried_however_slow_it_was() -> None:
    clock = Clock()
    adm = admission(clock, timeout_s=10.0)
    finish(adm, clock, 30.0)  # far past the target
    assert adm.predicted_s() == pytest.approx(30.0) and adm.admits()  # nothing to wait behind
    with adm.generation():
        assert not adm.admits()  # behind a 30 s generation: it would time out


def test_idle_time_is_not_model_time() -> None:
    clock = Clock()
    adm = admission(clock)
    finish(adm, clock, 1.0)
    clock.now += 100.0  # nothing in flight
    finish(adm, clock, 1.0)
    assert adm.per_generation_s() == pytest.approx(1.0)


def test_room_is_what_fits_beside_the_generations_in_flight() -> None:
    clock = Clock()
    adm = admission(clock, timeout_s=10.0)  # target 5 s
    assert adm.room() == 1  # unmeasured: one, to measure
    finish(adm, clock, 1.0, together=2)  # 0.5 s per generation: 10 fit
    assert adm.room() == 10
    with adm.generation(), adm.generation():
        assert adm.room() == 8
    finish(adm, clock, 60.0)  # now very slow
    assert adm.room() == 1  # idle: one is always tried
    with adm.generation():
        assert adm.room() == 0
