"""Clocks: wall time, or simulated time from a start instant at a speed multiplier or flat out.

Feeds pace themselves with ``await clock.sleep_until(ts_ns)``; everything else reads ``now_ns``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

NS_PER_SECOND = 1_000_000_000


class Clock(Protocol):
    def now_ns(self) -> int: ...

    async def sleep_until(self, ts_ns: int) -> None: ...

    @property
    def speed(self) -> float | None:
        """Simulated seconds per wall second; None for as fast as possible."""
        ...


class WallClock:
    """Real time."""

    @property
    def speed(self) -> float | None:
        return 1.0

    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep_until(self, ts_ns: int) -> None:
        delay_ns = ts_ns - self.now_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / NS_PER_SECOND)


class SimulatedClock:
    """Time that starts at ``start_ns`` and runs ``speed`` times faster than the wall clock."""

    def __init__(self, start_ns: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self._start_ns = start_ns
        self._speed = speed
        self._wall_start_ns = time.monotonic_ns()

    @property
    def speed(self) -> float | None:
        return self._speed

    def now_ns(self) -> int:
        elapsed_ns = time.monotonic_ns() - self._wall_start_ns
        return self._start_ns + int(elapsed_ns * self._speed)

    async def sleep_until(self, ts_ns: int) -> None:
        delay_ns = ts_ns - self.now_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / self._speed / NS_PER_SECOND)


class FastClock:
    """As fast as possible: time is whatever the feed has reached, never moving backwards."""

    def __init__(self, start_ns: int) -> None:
        self._now_ns = start_ns

    @property
    def speed(self) -> float | None:
        return None

    def now_ns(self) -> int:
        return self._now_ns

    async def sleep_until(self, ts_ns: int) -> None:
        self._now_ns = max(self._now_ns, ts_ns)
        # Let the rest of the loop run between steps even when nothing has to wait.
        await asyncio.sleep(0)


def make_clock(start_ns: int | None, speed: float | None) -> Clock:
    """Wall time when there is no start instant; otherwise simulated (``speed`` None = max)."""
    if start_ns is None:
        return WallClock()
    if speed is None:
        return FastClock(start_ns)
    return SimulatedClock(start_ns, speed)
