import asyncio
import time

import pytest

from tapescan.market.clock import FastClock, SimulatedClock, WallClock, make_clock

START = 1_795_770_000_000_000_000


async def test_fast_clock_jumps_to_each_instant_and_never_goes_back() -> None:
    clock = FastClock(START)
    began = time.monotonic()
    await clock.sleep_until(START + 3_600 * 10**9)
    await clock.sleep_until(START + 60 * 10**9)
    assert clock.now_ns() == START + 3_600 * 10**9
    assert time.monotonic() - began < 0.5
    assert clock.speed is None


async def test_simulated_clock_runs_at_its_multiplier() -> None:
    clock = SimulatedClock(START, speed=600.0)
    wall = time.monotonic()
    await clock.sleep_until(START + 60 * 10**9)  # one simulated minute = 0.1 s of wall time
    elapsed = time.monotonic() - wall
    assert clock.now_ns() >= START + 60 * 10**9
    assert 0.08 <= elapsed < 1.0


def test_simulated_clock_refuses_a_non_positive_speed() -> None:
    with pytest.raises(ValueError, match="positive"):
        SimulatedClock(START, 0)


async def test_wall_clock_does_not_wait_for_the_past() -> None:
    clock = WallClock()
    await asyncio.wait_for(clock.sleep_until(clock.now_ns() - 10**9), timeout=0.1)
    assert abs(clock.now_ns() - time.time_ns()) < 10**9


def test_make_clock_picks_wall_simulated_or_fast() -> None:
    assert isinstance(make_clock(None, 1.0), WallClock)
    assert isinstance(make_clock(START, 2.0), SimulatedClock)
    assert isinstance(make_clock(START, None), FastClock)
