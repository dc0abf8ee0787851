"""MarketState: one row per symbol, numpy columns allocated once for the universe.

Applying a batch of aggregates is vectorized and O(rows); nothing is kept per event. Time only
moves forward: ``advance_to`` takes minute snapshots for 1/5/15-minute changes, fixes the
regular close when the regular session ends, and rolls the day over at 04:00 ET of the next
session (today's daily bar into ATR and average volume, today's slot profile into the RVOL
baseline, the regular close into the previous close) before resetting today's columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.history import SLOT_MINUTES, SLOTS_PER_DAY, Warmup
from tapescan.indicators.atr import WilderAtr
from tapescan.market.calendar import MarketCalendar, SessionTimes
from tapescan.model import (
    NS_PER_MINUTE,
    NS_PER_SECOND,
    AggregateBatch,
    AggregateKind,
    FeedEvent,
    HaltEvent,
    Universe,
)
from tapescan.state.rvol_history import RvolHistory

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MINUTE_RING = 16  # price snapshots for changes over 1, 5 and 15 minutes
SECOND_RING = 60  # per-second volume buckets for the rolling one-minute volume
AVERAGE_VOLUME_SESSIONS = 20
NS_PER_SLOT = SLOT_MINUTES * NS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class StateLimits:
    """Knobs of the indicator definitions (docs/design.md, section 4)."""

    rvol_sessions: int = 10
    rvol_min_expected: float = 1_000.0
    vol_spike_min_expected: float = 100.0


@dataclass(frozen=True, slots=True, eq=False)
class SessionSummary:
    """One finished session of every symbol: its daily bar and its slot-volume profile."""

    date: dt.date
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: IntArray
    slot_volume: npt.NDArray[np.uint32]


@dataclass(slots=True)
class IngestCounters:
    """Rows seen and rows refused, by reason; malformed rows never reach the columns."""

    accepted: int = 0
    unknown_symbol: int = 0
    bad_price: int = 0
    bad_volume: int = 0
    inconsistent_bar: int = 0
    stale: int = 0

    @property
    def rejected(self) -> int:
        return (
            self.unknown_symbol
            + self.bad_price
            + self.bad_volume
            + self.inconsistent_bar
            + self.stale
        )


class MarketState:
    def __init__(
        self,
        universe: Universe,
        calendar: MarketCalendar,
        session: dt.date,
        limits: StateLimits | None = None,
        rvol_ring_file: Path | None = None,
    ) -> None:
        n = len(universe)
        self.universe = universe
        self.calendar = calendar
        self.limits = limits or StateLimits()
        self.counters = IngestCounters()
        self.times: SessionTimes = calendar.session(session)
        self._next_session = calendar.next_session(session)
        self._next_rollover_ns = calendar.session(self._next_session).pre_open_ns
        self.now_ns = self.times.pre_open_ns

        # From reference data and history; fixed during a day.
        self.prev_close = np.full(n, np.nan)
        self.float_shares = np.full(n, np.nan)
        self.market_cap = np.full(n, np.nan)
        self.avg_volume_20d = np.full(n, np.nan)
        self.atr_state = WilderAtr(n)
        self.rvol_history = RvolHistory(n, self.limits.rvol_sessions, rvol_ring_file)
        self._daily_volume = np.zeros((AVERAGE_VOLUME_SESSIONS, n))
        self._daily_volume_filled = 0
        self._daily_volume_next = 0

        # Live, never reset: the last trade survives the night.
        self.price = np.full(n, np.nan)
        self.last_event_ns = np.zeros(n, dtype=np.int64)
        self.halted = np.zeros(n, dtype=np.bool_)

        # Today's columns, reset at the rollover.
        self.volume = np.zeros(n, dtype=np.int64)
        self.dollar_volume = np.zeros(n)
        self.open = np.full(n, np.nan)
        self.close = np.full(n, np.nan)
        self.hod = np.full(n, np.nan)
        self.lod = np.full(n, np.nan)
        self.pm_high = np.full(n, np.nan)
        self.pm_low = np.full(n, np.nan)
        self.regular_high = np.full(n, np.nan)
        self.regular_low = np.full(n, np.nan)
        self.regular_last = np.full(n, np.nan)
        self.slot_volume = np.zeros((n, SLOTS_PER_DAY), dtype=np.uint32)  # < 4.3e9 per 5 min

        # Windows over time, shared clocks for all symbols.
        self.minute_price = np.full((MINUTE_RING, n), np.nan)
        self._minute_index = np.full(MINUTE_RING, -1, dtype=np.int64)  # minute number stored
        self._last_snapshot_minute = self.now_ns // NS_PER_MINUTE
        self.second_volume = np.zeros((SECOND_RING, n), dtype=np.int64)
        self._second_index = np.full(SECOND_RING, -1, dtype=np.int64)
        self.volume_1m = np.zeros(n, dtype=np.int64)
        self._closed = False
        # Per-second aggregates, once they start, are the finer truth; minute bars count only for
        # the minutes before the first second seen today (catch-up and backfill).
        self._seconds_from_ns: int | None = None
        # Called with the day that ends, just before the rollover resets it (recorder hook).
        self.on_session_end: Callable[[SessionSummary], None] | None = None

    # ----------------------------------------------------------------- warm-up

    def load_reference(self, reference: pa.Table) -> None:
        rows = self.universe.indices_of(reference.column("symbol").to_pylist())
        known = rows >= 0
        for name, column in (("float_shares", self.float_shares), ("market_cap", self.market_cap)):
            if name in reference.column_names:
                values = pc.cast(reference.column(name), pa.float64()).to_numpy(
                    zero_copy_only=False
                )
                column[rows[known]] = np.asarray(values, dtype=np.float64)[known]

    def load_warmup(self, warmup: Warmup) -> None:
        """Previous closes, ATR and average volume from daily bars; the RVOL ring from slots.

        Sessions are taken one at a time as ``warmup.sessions`` yields them; the RVOL baseline
        is computed once at the end.
        """
        n = len(self.universe)
        for item in warmup.sessions:
            if item.date >= warmup.session:
                continue
            if item.daily.num_rows:
                rows = self.universe.indices_of(item.daily.column("symbol").to_pylist())
                here = rows >= 0
                mask = np.zeros(n, dtype=np.bool_)
                mask[rows[here]] = True
                bar = {}
                for name in ("high", "low", "close", "volume"):
                    values = item.daily.column(name).to_numpy().astype(np.float64)
                    bar[name] = np.full(n, np.nan)
                    bar[name][rows[here]] = values[here]
                self._close_daily_bar(
                    bar["high"], bar["low"], bar["close"], np.nan_to_num(bar["volume"]), mask
                )
            if item.slot_volume is not None:
                self.rvol_history.push(item.slot_volume, recompute=False)
        self.rvol_history.recompute()

    def _close_daily_bar(
        self,
        high: FloatArray,
        low: FloatArray,
        close: FloatArray,
        volume: FloatArray,
        mask: BoolArray,
    ) -> None:
        self.atr_state.update(high, low, close, mask)
        self.prev_close = np.where(mask, close, self.prev_close)
        self._daily_volume[self._daily_volume_next] = volume
        self._daily_volume_next = (self._daily_volume_next + 1) % AVERAGE_VOLUME_SESSIONS
        self._daily_volume_filled = min(self._daily_volume_filled + 1, AVERAGE_VOLUME_SESSIONS)
        self.avg_volume_20d = self._daily_volume.sum(axis=0) / self._daily_volume_filled

    # ----------------------------------------------------------------- time

    def advance_to(self, ts_ns: int) -> None:
        """Move the state's clock to ``ts_ns``: snapshots, the regular close, the rollover."""
        if ts_ns <= self.now_ns:
            return
        while ts_ns >= self._next_rollover_ns:
            self._snapshot_minutes(self._next_rollover_ns - 1)
            self._finish_regular_session()
            self._rollover()
        self._snapshot_minutes(ts_ns)
        if ts_ns >= self.times.regular_close_ns:
            self._finish_regular_session()
        self._expire_seconds(ts_ns)
        self.now_ns = ts_ns

    def _snapshot_minutes(self, ts_ns: int) -> None:
        """Record the price at every minute boundary in (last snapshot, ts_ns]."""
        minute = ts_ns // NS_PER_MINUTE
        first = max(self._last_snapshot_minute + 1, minute - MINUTE_RING + 1)
        for boundary in range(first, minute + 1):
            slot = boundary % MINUTE_RING
            self.minute_price[slot] = self.price
            self._minute_index[slot] = boundary
        self._last_snapshot_minute = max(self._last_snapshot_minute, minute)

    def _backfill_snapshots(
        self, rows: npt.NDArray[np.int32], end: IntArray, close: FloatArray
    ) -> None:
        """Snapshots already taken at a boundary at or after a bar's end take that bar in.

        A snapshot holds the close of each symbol's latest bar that ended by its boundary,
        whenever the bar arrives: a catch-up batch spanning many minutes, today's bars read back
        from the store, or a bar that ends on a boundary and arrives after a scan cycle has
        already moved the clock past it all end in the snapshots a replay in time order takes.
        A bar older than one already applied for its symbol changes no snapshot.
        """
        last = self._last_snapshot_minute
        first = -(-end // NS_PER_MINUTE)  # the first boundary at or after each bar's end
        late = (first <= last) & (end >= self.last_event_ns[rows])
        if not late.any():
            return
        rows, first, close = rows[late], first[late], close[late]
        for boundary in range(max(int(first.min()), last - MINUTE_RING + 1), last + 1):
            slot = boundary % MINUTE_RING
            if self._minute_index[slot] != boundary:
                continue
            here = first <= boundary
            self.minute_price[slot, rows[here]] = close[here]  # in start order: the latest wins

    def price_minutes_ago(self, minutes: int) -> FloatArray:
        """Last price as of the minute boundary at or before now - ``minutes`` (NaN if unknown)."""
        boundary = (self.now_ns - minutes * NS_PER_MINUTE) // NS_PER_MINUTE
        slot = boundary % MINUTE_RING
        if self._minute_index[slot] != boundary:
            return np.full(len(self.universe), np.nan)
        snapshot: FloatArray = self.minute_price[slot]
        return snapshot

    def _expire_seconds(self, ts_ns: int) -> None:
        """Drop per-second volume buckets that left the (now - 60 s, now] window."""
        newest = ts_ns // NS_PER_SECOND
        stale = (self._second_index >= 0) & (self._second_index <= newest - SECOND_RING)
        for slot in np.flatnonzero(stale):
            self.volume_1m -= self.second_volume[slot]
            self.second_volume[slot] = 0
            self._second_index[slot] = -1

    def _finish_regular_session(self) -> None:
        if not self._closed:
            self.close = self.regular_last.copy()
            self._closed = True

    def summary(self) -> SessionSummary:
        """Today's daily bar (regular-session OHLC, whole-day volume) and slot profile, copied."""
        return SessionSummary(
            date=self.times.date,
            open=self.open.copy(),
            high=self.regular_high.copy(),
            low=self.regular_low.copy(),
            close=self.close.copy(),
            volume=self.volume.copy(),
            slot_volume=self.slot_volume.copy(),
        )

    def _rollover(self) -> None:
        if self.on_session_end is not None:
            self.on_session_end(self.summary())
        traded = ~np.isnan(self.close)
        self._close_daily_bar(
            self.regular_high, self.regular_low, self.close, self.volume.astype(np.float64), traded
        )
        self.rvol_history.push(self.slot_volume)
        self.times = self.calendar.session(self._next_session)
        self._next_session = self.calendar.next_session(self._next_session)
        self._next_rollover_ns = self.calendar.session(self._next_session).pre_open_ns
        for column in (
            self.open,
            self.close,
            self.hod,
            self.lod,
            self.pm_high,
            self.pm_low,
            self.regular_high,
            self.regular_low,
            self.regular_last,
        ):
            column.fill(np.nan)
        self.volume.fill(0)
        self.dollar_volume.fill(0.0)
        self.slot_volume.fill(0)
        self._closed = False
        self._seconds_from_ns = None

    # ----------------------------------------------------------------- events

    def apply_event(self, event: FeedEvent) -> None:
        """Apply whatever a feed emitted (status events carry nothing for state)."""
        if isinstance(event, AggregateBatch):
            self.apply(event)
        elif isinstance(event, HaltEvent):
            self.apply_halt(event)

    def apply_halt(self, event: HaltEvent) -> None:
        if 0 <= event.symbol_index < len(self.universe):
            self.advance_to(event.ts_event_ns)
            self.halted[event.symbol_index] = event.halted

    def apply(self, batch: AggregateBatch) -> int:
        """Apply the rows of ``batch``; returns how many were accepted."""
        if len(batch) == 0:
            return 0
        self.advance_to(batch.ts_event_ns - 1)
        rows, keep = self._valid_rows(batch)
        if batch.kind is AggregateKind.SECOND:
            if self._seconds_from_ns is None and keep.any():
                self._seconds_from_ns = int(batch.start_ns[keep].min())
        elif self._seconds_from_ns is not None:
            keep &= batch.end_ns <= self._seconds_from_ns
        if not keep.any():
            return 0
        start = batch.start_ns[keep]
        order = np.argsort(start, kind="stable")
        rows, start = rows[keep][order], start[order]
        open_, high, low, close = (
            getattr(batch, name)[keep][order] for name in ("open", "high", "low", "close")
        )
        volume = batch.volume[keep][order]
        vwap = batch.vwap[keep][order]
        self._apply_rows(rows, start, open_, high, low, close, volume, vwap, int(batch.kind))
        self.advance_to(batch.ts_event_ns)
        self.counters.accepted += len(rows)
        return len(rows)

    def _checks(
        self, batch: AggregateBatch
    ) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray, BoolArray]:
        rows = batch.symbol_index
        known = (rows >= 0) & (rows < len(self.universe))
        prices = np.stack([batch.open, batch.high, batch.low, batch.close, batch.vwap])
        good_price = np.asarray(np.isfinite(prices).all(axis=0) & (prices > 0).all(axis=0))
        good_volume = batch.volume >= 0
        consistent = (batch.low <= np.minimum(batch.open, batch.close)) & (
            batch.high >= np.maximum(batch.open, batch.close)
        )
        fresh = batch.start_ns >= self.times.pre_open_ns
        return known, good_price, good_volume, consistent, fresh

    def valid_mask(self, batch: AggregateBatch) -> BoolArray:
        """Rows of ``batch`` that state would accept (no counters touched): what is recorded."""
        known, good_price, good_volume, consistent, fresh = self._checks(batch)
        mask: BoolArray = known & good_price & good_volume & consistent & fresh
        return mask

    def _valid_rows(self, batch: AggregateBatch) -> tuple[npt.NDArray[np.int32], BoolArray]:
        known, good_price, good_volume, consistent, fresh = self._checks(batch)
        counters = self.counters
        counters.unknown_symbol += int((~known).sum())
        counters.bad_price += int((known & ~good_price).sum())
        counters.bad_volume += int((known & good_price & ~good_volume).sum())
        counters.inconsistent_bar += int((known & good_price & good_volume & ~consistent).sum())
        counters.stale += int((known & good_price & good_volume & consistent & ~fresh).sum())
        return batch.symbol_index, known & good_price & good_volume & consistent & fresh

    def _apply_rows(
        self,
        rows: npt.NDArray[np.int32],
        start: IntArray,
        open_: FloatArray,
        high: FloatArray,
        low: FloatArray,
        close: FloatArray,
        volume: IntArray,
        vwap: FloatArray,
        window_s: int,
    ) -> None:
        times = self.times
        self.price[rows] = close  # rows sorted by start: the latest bar wins
        end = start + window_s * NS_PER_SECOND
        self._backfill_snapshots(rows, end, close)
        np.maximum.at(self.last_event_ns, rows, end)
        np.add.at(self.volume, rows, volume)
        np.add.at(self.dollar_volume, rows, vwap * volume)
        _fmax_at(self.hod, rows, high)
        _fmin_at(self.lod, rows, low)

        slot = np.clip((start - times.pre_open_ns) // NS_PER_SLOT, 0, SLOTS_PER_DAY - 1)
        np.add.at(self.slot_volume, (rows, slot), volume.astype(np.uint32))

        pre = start < times.regular_open_ns
        if pre.any():
            _fmax_at(self.pm_high, rows[pre], high[pre])
            _fmin_at(self.pm_low, rows[pre], low[pre])
        regular = ~pre & (start < times.regular_close_ns)
        if regular.any():
            r_rows = rows[regular]
            first_open = np.isnan(self.open[r_rows])
            # The first regular-session aggregate's open is the official open.
            unset_rows, first_index = np.unique(r_rows[first_open], return_index=True)
            self.open[unset_rows] = open_[regular][first_open][first_index]
            _fmax_at(self.regular_high, r_rows, high[regular])
            _fmin_at(self.regular_low, r_rows, low[regular])
            self.regular_last[r_rows] = close[regular]

        # Bucketed by end: an aggregate counts in the last 60 s once it has ended inside them.
        self._add_second_volume(rows, end // NS_PER_SECOND, volume)

    def _add_second_volume(
        self, rows: npt.NDArray[np.int32], second: IntArray, volume: IntArray
    ) -> None:
        newest = max(int(second.max()), self.now_ns // NS_PER_SECOND)
        recent = second > newest - SECOND_RING
        for s in np.unique(second[recent]):
            slot = int(s) % SECOND_RING
            if self._second_index[slot] != s:
                self.volume_1m -= self.second_volume[slot]
                self.second_volume[slot] = 0
                self._second_index[slot] = s
            here = recent & (second == s)
            np.add.at(self.second_volume[slot], rows[here], volume[here])
            np.add.at(self.volume_1m, rows[here], volume[here])


def _fmax_at(target: FloatArray, rows: npt.NDArray[np.int32], values: FloatArray) -> None:
    """target[rows] = max(target[rows], values), treating NaN in target as unset."""
    np.fmax.at(target, rows, values)


def _fmin_at(target: FloatArray, rows: npt.NDArray[np.int32], values: FloatArray) -> None:
    np.fmin.at(target, rows, values)
