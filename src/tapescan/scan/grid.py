"""The grid of market time scans cycle on when a feed sets the pace (replays, flat-out clocks).

Cycles fall on whole multiples of the interval while the market is open (04:00-20:00 ET); the
closed hours are skipped, so a replayed day records the same cycles on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator

from tapescan.market.calendar import MarketCalendar, Phase


class CycleGrid:
    def __init__(self, calendar: MarketCalendar, interval_ns: int, start_ns: int) -> None:
        self.calendar = calendar
        self.interval_ns = interval_ns
        self.next_ns = self._ceil(start_ns)

    def _ceil(self, ns: int) -> int:
        return -(-ns // self.interval_ns) * self.interval_ns

    def before(self, ts_ns: int) -> Iterator[int]:
        """Every grid instant before ``ts_ns`` not yet given, the market-closed ones skipped."""
        while self.next_ns < ts_ns:
            at = self.next_ns
            if self.calendar.phase(at) is Phase.CLOSED:
                times = self.calendar.session(self.calendar.trading_day(at))
                if at >= times.pre_open_ns:
                    times = self.calendar.session(self.calendar.next_session(times.date))
                self.next_ns = self._ceil(times.pre_open_ns)
                continue
            self.next_ns = at + self.interval_ns
            yield at
