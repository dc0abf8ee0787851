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
        start_ns: npt.NDArray[np.int64],
        active: npt.NDArray[np.bool_],
        open_: npt.NDArray[np.float64],
        high: npt.NDArray[np.float64],
        low: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.int64],
    ) -> None:
        """Consecutive minutes as (symbols, minutes) grids; ``start_ns`` (minutes,) holds their
        starts and ``active`` the cells with a bar (volume is 0 elsewhere).

        Worked on the grids in place of gathering the traded cells: a temporary or two of the
        grid's size (2.85 MB for 11,882 symbols x 30 minutes) instead of ~35 MB.
        """
        self.volume += volume.sum(axis=1)
        regular = (start_ns >= self.times.regular_open_ns) & (
            start_ns < self.times.regular_close_ns
        )
        if not regular.any():
            return
        first, last = np.flatnonzero(regular)[[0, -1]]
        window = slice(int(first), int(last) + 1)  # regular minutes are consecutive
        traded = active[:, window]
        np.maximum(
            self.high, np.max(np.where(traded, high[:, window], -np.inf), axis=1), out=self.high
        )
        np.minimum(self.low, np.min(np.where(traded, low[:, window], np.inf), axis=1), out=self.low)
        rows = np.flatnonzero(traded.any(axis=1))
        cells = traded[rows]
        earliest = np.argmax(cells, axis=1)
        latest = cells.shape[1] - 1 - np.argmax(cells[:, ::-1], axis=1)
        unset = np.isnan(self.open[rows])
        self.open[rows[unset]] = open_[rows[unset], window.start + earliest[unset]]
        self.close[rows] = close[rows, window.start + latest]

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
