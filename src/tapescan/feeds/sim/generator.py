"""The simulated market as one object: universe, day plans, minute bars, daily bars, warm-up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tapescan.feeds.history import SLOT_MINUTES, SLOTS_PER_DAY, DailyAccumulator
from tapescan.feeds.sim.intraday import DayPath, MinuteChunk
from tapescan.feeds.sim.plan import DailyChain, DayPlan
from tapescan.feeds.sim.universe import SimUniverse
from tapescan.market.calendar import MarketCalendar
from tapescan.model import AggregateBatch, AggregateKind

MINUTE_BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("vwap", pa.float64()),
        ("trades", pa.int64()),
    ]
)
DAILY_BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
    ]
)


class SimMarket:
    """A deterministic market for ``symbols`` symbols drawn from ``seed``."""

    def __init__(self, seed: int, symbols: int, calendar: MarketCalendar) -> None:
        self.seed = seed
        self.calendar = calendar
        self.sim_universe = SimUniverse.generate(seed, symbols)
        self.universe = self.sim_universe.universe
        self._chain = DailyChain(self.sim_universe, seed, calendar)
        self._symbols = pa.array(self.universe.symbols, pa.string())

    def reference_table(self) -> pa.Table:
        return self.sim_universe.reference_table()

    def plan(self, session: dt.date) -> DayPlan:
        return self._chain.plan(session)

    def walk_to(self, session: dt.date, tick: Callable[[], None]) -> None:
        """Walk the daily chain up to ``session`` (done once; ~2 s at 11,882 symbols), calling
        ``tick`` now and then on the way."""
        self._chain.close_before(self._chain.ordinal(session), tick)

    def day_path(self, session: dt.date) -> DayPath:
        return DayPath(
            self.plan(session), self.sim_universe, self.calendar.session(session), self.seed
        )

    def chunks(self, session: dt.date) -> Iterator[MinuteChunk]:
        path = self.day_path(session)
        for index in range(path.chunks):
            yield path.chunk(index)

    def minute_batch(self, chunk: MinuteChunk, minute: int) -> AggregateBatch:
        """The bars of column ``minute`` (0-29) of a chunk, for symbols that traded in it."""
        rows = np.flatnonzero(chunk.active[:, minute])
        return AggregateBatch(
            kind=AggregateKind.MINUTE,
            symbol_index=rows.astype(np.int32),
            start_ns=np.full(len(rows), chunk.start_ns[minute], dtype=np.int64),
            open=chunk.open[rows, minute],
            high=chunk.high[rows, minute],
            low=chunk.low[rows, minute],
            close=chunk.close[rows, minute],
            volume=chunk.volume[rows, minute],
            vwap=chunk.vwap[rows, minute],
            trades=chunk.trades[rows, minute].astype(np.int32),
        )

    def minute_table(self, chunk: MinuteChunk) -> pa.Table:
        """A chunk's bars as rows in the replay format, ordered by (ts, symbol index)."""
        minute_index, rows = np.nonzero(chunk.active.T)
        ts_us = chunk.start_ns[minute_index] // 1000
        return pa.table(
            [
                self._symbols.take(pa.array(rows)),
                pa.array(ts_us, pa.timestamp("us", tz="UTC")),
                pa.array(chunk.open[rows, minute_index]),
                pa.array(chunk.high[rows, minute_index]),
                pa.array(chunk.low[rows, minute_index]),
                pa.array(chunk.close[rows, minute_index]),
                pa.array(chunk.volume[rows, minute_index]),
                pa.array(chunk.vwap[rows, minute_index]),
                pa.array(chunk.trades[rows, minute_index]),
            ],
            schema=MINUTE_BAR_SCHEMA,
        )

    def modelled_daily_table(self, session: dt.date) -> pa.Table:
        """Daily bars of a session from its plan alone (for history without minute bars)."""
        plan = self.plan(session)
        n = len(self.universe)
        return pa.table(
            [
                self._symbols,
                pa.array(np.full(n, session), pa.date32()),
                pa.array(plan.open),
                pa.array(np.maximum(plan.day_high, np.maximum(plan.open, plan.close))),
                pa.array(np.minimum(plan.day_low, np.minimum(plan.open, plan.close))),
                pa.array(plan.close),
                pa.array(np.rint(plan.expected_volume).astype(np.int64)),
            ],
            schema=DAILY_BAR_SCHEMA,
        )

    def daily_table(self, accumulator: DailyAccumulator) -> pa.Table:
        return accumulator.table(self._symbols)

    def accumulate(self, accumulator: DailyAccumulator, chunk: MinuteChunk) -> None:
        accumulator.add(
            chunk.start_ns,
            chunk.active,
            chunk.open,
            chunk.high,
            chunk.low,
            chunk.close,
            chunk.volume,
        )

    def slot_volume(self, session: dt.date) -> npt.NDArray[np.uint32]:
        """Volume per 5-minute slot from 04:00 ET, (symbols, 192), for the RVOL baseline."""
        slots = self.empty_slots()
        for chunk in self.chunks(session):
            self.add_slot_volume(slots, chunk)
        return slots

    def empty_slots(self) -> npt.NDArray[np.uint32]:
        return np.zeros((len(self.universe), SLOTS_PER_DAY), dtype=np.uint32)

    def add_slot_volume(self, slots: npt.NDArray[np.uint32], chunk: MinuteChunk) -> None:
        """The chunk's volume into its 5-minute slots of ``slots`` (from ``empty_slots``)."""
        per_slot = chunk.volume.reshape(len(self.universe), -1, SLOT_MINUTES).sum(axis=2)
        first = chunk.first_minute // SLOT_MINUTES
        slots[:, first : first + per_slot.shape[1]] = per_slot
