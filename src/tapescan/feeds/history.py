"""History a feed hands to state before it starts: daily bars and per-slot minute volume."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.market.calendar import SessionTimes

SLOT_MINUTES = 5
SLOTS_PER_DAY = 192  # 04:00-20:00 ET in 5-minute slots
DAILY_HISTORY_SESSIONS = 40  # >= 30 for ATR(14) to settle, >= 20 for avg_volume_20d
MINUTE_HISTORY_SESSIONS = 10  # the RVOL baseline's N


class DailyAccumulator:
    """Builds one session's daily bars from its minute bars, fed in time order.

    Open, high, low and close are the regular session's; volume is the whole day's (04:00-20:00
    ET), as vendors' daily aggregates count it.
    """

    def __init__(self, symbols: int, times: SessionTimes) -> None:
        self.times = times
        self.open = np.full(symbols, np.nan)
        self.high = np.full(symbols, -np.inf)
        self.low = np.full(symbols, np.inf)
        self.close = np.full(symbols, np.nan)
        self.volume = np.zeros(symbols, dtype=np.int64)

    def add(
        self,
        rows: npt.NDArray[np.int64],
        start_ns: npt.NDArray[np.int64],
        open_: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        low: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.int64],
    ) -> None:
        np.add.at(self.volume, rows, volume)
        regular = (start_ns >= self.times.regular_open_ns) & (
            start_ns < self.times.regular_close_ns
        )
        if not regular.any():
            return
        rows, open_, close = rows[regular], open_[regular], close[regular]
        np.maximum.at(self.high, rows, high[regular])
        np.minimum.at(self.low, rows, low[regular])
        symbols, first = np.unique(rows, return_index=True)
        unset = np.isnan(self.open[symbols])
        self.open[symbols[unset]] = open_[first[unset]]
        reversed_rows = rows[::-1]
        symbols, last = np.unique(reversed_rows, return_index=True)
        self.close[symbols] = close[::-1][last]

    def table(self, symbols: pa.Array) -> pa.Table:
        traded = np.flatnonzero(~np.isnan(self.open))
        return pa.table(
            {
                "symbol": symbols.take(pa.array(traded)),
                "date": pa.array(np.full(len(traded), self.times.date), pa.date32()),
                "open": pa.array(self.open[traded]),
                "high": pa.array(self.high[traded]),
                "low": pa.array(self.low[traded]),
                "close": pa.array(self.close[traded]),
                "volume": pa.array(self.volume[traded]),
            }
        )


@dataclass(frozen=True, slots=True, eq=False)
class WarmupSession:
    """One session of warm-up history."""

    date: dt.date
    daily: pa.Table  # its daily bars, replay schema (symbol, date, open, high, low, close, volume)
    # volume per 5-minute slot, (symbols, 192), for the sessions of the RVOL baseline; uint32
    # like state's own (< 4.3e9 per slot)
    slot_volume: npt.NDArray[np.uint32] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Warmup:
    """Everything state needs from before the first live event: the sessions before
    ``session``, oldest first.

    ``sessions`` may be produced one at a time as it is read (the simulated feed draws each
    session then; the store reads each then), so that no more than one session of slot volume
    (9 MB at 11,882 symbols) is held at once; it is read once.
    """

    session: dt.date
    sessions: Iterable[WarmupSession]

    @classmethod
    def of(
        cls,
        session: dt.date,
        daily: pa.Table,
        slot_volume: Mapping[dt.date, npt.NDArray[np.uint32]] | None = None,
    ) -> Warmup:
        """A warm-up from tables in memory: daily bars of any dates, slot volume by date."""
        slots = slot_volume or {}
        dates = daily.column("date")
        days = sorted(set(dates.to_pylist()) | set(slots))
        items = [
            WarmupSession(
                day, daily.filter(pc.equal(dates, pa.scalar(day, pa.date32()))), slots.get(day)
            )
            for day in days
        ]
        return cls(session, items)
