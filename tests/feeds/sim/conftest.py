import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapescan.feeds.sim.generator import SimMarket
from tapescan.feeds.sim.plan import DayPlan
from tapescan.market.calendar import SessionTimes, market_calendar

REALISM_SYMBOLS = 6_000
REALISM_SEED = 11
REALISM_DAY = dt.date(2026, 11, 24)


@dataclass
class SimulatedDay:
    """One simulated session as dense (symbols, minutes) arrays; volume 0 where no trade."""

    plan: DayPlan
    times: SessionTimes
    active: npt.NDArray[np.bool_]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.int64]

    @property
    def regular(self) -> slice:
        first = self.times.premarket_minutes
        return slice(first, first + self.times.regular_minutes)


def simulate_day(market: SimMarket, day: dt.date) -> SimulatedDay:
    chunks = list(market.chunks(day))

    def stack(name: str) -> Any:
        return np.concatenate([getattr(c, name) for c in chunks], axis=1)

    return SimulatedDay(
        plan=market.plan(day),
        times=market.calendar.session(day),
        active=stack("active"),
        open=stack("open"),
        high=stack("high"),
        low=stack("low"),
        close=stack("close"),
        volume=stack("volume"),
    )


@pytest.fixture(scope="session")
def realism_market() -> SimMarket:
    return SimMarket(REALISM_SEED, REALISM_SYMBOLS, market_calendar())


@pytest.fixture(scope="session")
def realism_day(realism_market: SimMarket) -> SimulatedDay:
    return simulate_day(realism_market, REALISM_DAY)
