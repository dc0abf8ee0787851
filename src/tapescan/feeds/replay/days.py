"""Which trading day each minute bar belongs to, for many bars at once."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

from tapescan.market.calendar import MarketCalendar

NS_PER_HOUR = 3_600_000_000_000


class TradingDays:
    """Maps bar instants to their trading day (04:00 ET to 04:00 ET of the next session).

    New York is a whole number of hours from UTC and trading days change at 04:00 ET, so every
    instant of one UTC hour has the same trading day: the calendar is asked once per hour.
    """

    def __init__(self, calendar: MarketCalendar) -> None:
        self.calendar = calendar
        self._by_hour: dict[int, dt.date] = {}

    def of_hour(self, hour: int) -> dt.date:
        """Trading day of the UTC hour starting ``hour`` hours after the epoch.

        Raises NotASessionError for instants outside the market calendar.
        """
        day = self._by_hour.get(hour)
        if day is None:
            day = self.calendar.trading_day(hour * NS_PER_HOUR)
            self._by_hour[hour] = day
        return day

    @staticmethod
    def hours(ts_ns: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
        """The distinct UTC hours of ``ts_ns`` and, per instant, the position of its hour."""
        hours, inverse = np.unique(ts_ns // NS_PER_HOUR, return_inverse=True)
        return hours, inverse
