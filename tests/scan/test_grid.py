"""The market-time grid of feed-paced scan cycles."""

from __future__ import annotations

import datetime as dt

from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.scan.grid import CycleGrid

CAL = market_calendar()
S = 1_000_000_000


def test_whole_multiples_of_the_interval_and_each_instant_once() -> None:
    start = et_to_ns(dt.date(2026, 11, 24), dt.time(9, 30)) + 1
    grid = CycleGrid(CAL, 5 * S, start)
    first = list(grid.before(start + 20 * S))
    again = list(grid.before(start + 20 * S))
    assert first == [start - 1 + k * 5 * S for k in range(1, 5)]
    assert again == []


def test_closed_hours_and_the_weekend_are_skipped() -> None:
    friday_late = et_to_ns(dt.date(2026, 11, 20), dt.time(19, 59, 58))
    monday = et_to_ns(dt.date(2026, 11, 23), dt.time(4, 0))
    grid = CycleGrid(CAL, S, friday_late)
    instants = list(grid.before(monday + 3 * S))
    assert instants == [friday_late, friday_late + S, monday, monday + S, monday + 2 * S]


def test_thanksgiving_has_no_cycles() -> None:
    wednesday_close = et_to_ns(dt.date(2026, 11, 25), dt.time(20, 0))
    friday = et_to_ns(dt.date(2026, 11, 27), dt.time(4, 0))
    grid = CycleGrid(CAL, 60 * S, wednesday_close - 60 * S)
    assert list(grid.before(friday + 1)) == [wednesday_close - 60 * S, friday]
