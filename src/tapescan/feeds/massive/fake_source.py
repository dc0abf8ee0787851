"""What ``tapescan fake-massive`` serves: the simulated market, or recorded replay files.

A source gives the fake its universe and reference data, the daily bars of the sessions before
the served one (grouped daily), every minute bar of one past session at a time (per-ticker
minute aggregates), and the live feed whose bars the socket carries and today's REST minutes
are cut from. The simulator (``SimSource``) also has per-second bars, LULD bands and halts;
replay files (``ReplaySource``) have minute bars only, so the socket carries ``AM`` messages
alone, as a subscription to ``AM.*`` does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.history import DAILY_HISTORY_SESSIONS
from tapescan.feeds.replay.feed import ReplayFeed
from tapescan.feeds.replay.reader import MinuteBarReader, read_daily_bars
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import MarketCalendar
from tapescan.market.clock import Clock
from tapescan.model import FeedEvent, Universe

NS_PER_MS = 1_000_000
_MINUTE_FIELDS = ("start_ms", "open", "high", "low", "close", "vwap", "volume", "trades")


@dataclass(frozen=True, slots=True, eq=False)
class SessionMinutes:
    """Every minute bar of one session, ordered by (symbol row, start): ``first[row]`` to
    ``first[row + 1]`` are row's bars (~64 B a bar: ~320 MB for 11,882 symbols' 5 M bars)."""

    day: dt.date
    first: npt.NDArray[np.int64]
    start_ms: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    vwap: npt.NDArray[np.float64]
    volume: npt.NDArray[np.int64]
    trades: npt.NDArray[np.int64]

    @classmethod
    def of(
        cls,
        day: dt.date,
        symbols: int,
        rows: npt.NDArray[np.int64],
        columns: dict[str, npt.NDArray[Any]],
    ) -> SessionMinutes:
        """From bars in any order: their universe rows and ``_MINUTE_FIELDS`` columns."""
        order = np.lexsort((columns["start_ms"], rows))
        ordered = {name: columns[name][order] for name in _MINUTE_FIELDS}
        first = np.searchsorted(rows[order], np.arange(symbols + 1)).astype(np.int64)
        return cls(
            day,
            first,
            ordered["start_ms"].astype(np.int64),
            ordered["open"].astype(np.float64),
            ordered["high"].astype(np.float64),
            ordered["low"].astype(np.float64),
            ordered["close"].astype(np.float64),
            ordered["vwap"].astype(np.float64),
            ordered["volume"].astype(np.int64),
            ordered["trades"].astype(np.int64),
        )

    def bars(self, row: int) -> list[dict[str, Any]]:
        lo, hi = int(self.first[row]), int(self.first[row + 1])
        return [
            {"o": o, "h": h, "l": low, "c": c, "v": v, "vw": round(vw, 4), "n": n, "t": t}
            for o, h, low, c, v, vw, n, t in zip(
                self.open[lo:hi].tolist(),
                self.high[lo:hi].tolist(),
                self.low[lo:hi].tolist(),
                self.close[lo:hi].tolist(),
                self.volume[lo:hi].tolist(),
                self.vwap[lo:hi].tolist(),
                self.trades[lo:hi].tolist(),
                self.start_ms[lo:hi].tolist(),
                strict=True,
            )
        ]


class LiveFeed(Protocol):
    def events(self, clock: Clock, start_ns: int) -> AsyncIterator[FeedEvent]: ...


class FakeSource(Protocol):
    @property
    def universe(self) -> Universe: ...

    @property
    def calendar(self) -> MarketCalendar: ...

    @property
    def second_aggregates(self) -> bool: ...

    def reference_table(self) -> pa.Table:
        """One row per universe symbol, in its order: ``symbol`` and whichever of ``name``,
        ``exchange``, ``float_shares``, ``shares_outstanding``, ``market_cap`` and ``sector``
        the source has (null where a symbol has none)."""
        ...

    def history(
        self, session: dt.date, on_step: Callable[[int, int], None] | None
    ) -> Iterator[tuple[dt.date, pa.Table]]:
        """Daily bars (symbol, date, open, high, low, close, volume) of sessions before
        ``session``, oldest first."""
        ...

    def session_minutes(self, day: dt.date) -> SessionMinutes:
        """Every minute bar of the past session ``day``."""
        ...

    def live(self) -> LiveFeed:
        """The feed the socket carries (and today's REST minutes come from)."""
        ...


class SimSource:
    """The simulated market: its warm-up sessions (drawn as ``tapescan run`` draws them) and
    its live aggregates, bands and halts."""

    def __init__(self, market: SimMarket, second_aggregates: bool) -> None:
        self.market = market
        self._feed = SimFeed(market, second_aggregates=second_aggregates)
        self._second_aggregates = second_aggregates
        # Minute bars of past sessions are drawn by a market of their own: the socket's draws
        # run meanwhile in another thread, on ``market``.
        self._minute_market = SimMarket(market.seed, len(market.universe), market.calendar)

    @property
    def universe(self) -> Universe:
        return self.market.universe

    @property
    def calendar(self) -> MarketCalendar:
        return self.market.calendar

    @property
    def second_aggregates(self) -> bool:
        return self._second_aggregates

    def reference_table(self) -> pa.Table:
        return self.market.reference_table()

    def history(
        self, session: dt.date, on_step: Callable[[int, int], None] | None
    ) -> Iterator[tuple[dt.date, pa.Table]]:
        for item in self._feed.warmup(session, on_step).sessions:
            yield item.date, item.daily

    def session_minutes(self, day: dt.date) -> SessionMinutes:
        """Draw ``day`` whole (~5 s at 11,882 symbols)."""
        market = self._minute_market
        path = market.day_path(day)
        parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in _MINUTE_FIELDS}
        rows_parts: list[npt.NDArray[np.int64]] = []
        for index in range(path.chunks):
            chunk = path.chunk(index)
            rows, minutes = np.nonzero(chunk.active)
            rows_parts.append(rows.astype(np.int64))
            parts["start_ms"].append(chunk.start_ns[minutes] // NS_PER_MS)
            for name in _MINUTE_FIELDS[1:]:
                parts[name].append(getattr(chunk, name)[rows, minutes])
        columns = {name: np.concatenate(parts[name]) for name in _MINUTE_FIELDS}
        return SessionMinutes.of(day, len(market.universe), np.concatenate(rows_parts), columns)

    def live(self) -> SimFeed:
        return self._feed


class ReplaySource:
    """Recorded files (docs/data-formats.md): their reference, their daily bars, their minute
    bars (each past session read from the minute-bar file when first asked; the served session
    replayed at the clock's pace)."""

    def __init__(self, feed: ReplayFeed) -> None:
        self.feed = feed

    @property
    def universe(self) -> Universe:
        return self.feed.universe

    @property
    def calendar(self) -> MarketCalendar:
        return self.feed.calendar

    @property
    def second_aggregates(self) -> bool:
        return False  # minute bars only

    def reference_table(self) -> pa.Table:
        return self.feed.reference()

    def history(
        self, session: dt.date, on_step: Callable[[int, int], None] | None
    ) -> Iterator[tuple[dt.date, pa.Table]]:
        days = [day for day in self.feed.summary.daily_bars.sessions if day < session]
        days = days[-(DAILY_HISTORY_SESSIONS + 1) :]  # what a warm-up asks, and a day to spare
        table = read_daily_bars(self.feed.files.daily_bars, days, self.feed.limits)  # one pass
        dates = table.column("date")
        for done, day in enumerate(days, start=1):
            yield day, table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
            if on_step is not None:
                on_step(done, len(days))

    def session_minutes(self, day: dt.date) -> SessionMinutes:
        times = self.calendar.session(day)
        rows: list[npt.NDArray[np.int64]] = []
        parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in _MINUTE_FIELDS}
        reader = MinuteBarReader(
            self.feed.files.minute_bars,
            from_ns=times.pre_open_ns,
            end_ns=times.post_close_ns,
            time_ordered=self.feed.summary.minute_bars.time_ordered,
            limits=self.feed.limits,
        )
        with reader:
            for batch in reader.batches():
                at = self.universe.indices_of(batch.column("symbol").to_pylist())
                known = at >= 0
                rows.append(at[known].astype(np.int64))
                starts = batch.column("start_ns").to_numpy(zero_copy_only=False)
                parts["start_ms"].append(starts[known] // NS_PER_MS)
                for name in _MINUTE_FIELDS[1:]:
                    parts[name].append(batch.column(name).to_numpy(zero_copy_only=False)[known])
        if not rows:
            empty = {name: np.zeros(0) for name in _MINUTE_FIELDS}
            return SessionMinutes.of(day, len(self.universe), np.zeros(0, np.int64), empty)
        columns = {name: np.concatenate(parts[name]) for name in _MINUTE_FIELDS}
        return SessionMinutes.of(day, len(self.universe), np.concatenate(rows), columns)

    def live(self) -> ReplayFeed:
        return self.feed
