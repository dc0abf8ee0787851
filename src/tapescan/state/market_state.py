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
    BandBatch,
    FeedEvent,
    HaltEvent,
    Universe,
)
from tapescan.state.recent_bars import DAY_MINUTES, MINUTE, NONE, SECONDS, RecentBars
from tapescan.state.rvol_history import RvolHistory
from tapescan.state.scatter import scatter

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MINUTE_RING = 16  # price snapshots for changes over 1, 5 and 15 minutes
SECOND_RING = 60  # per-second volume buckets for the rolling one-minute volume
AVERAGE_VOLUME_SESSIONS = 20
NS_PER_SLOT = SLOT_MINUTES * NS_PER_MINUTE
NEXT_DATA_CELLS = 1 << 20  # (minute, symbol) cells looked at together: ~9 MB of int64 at most
SPLIT_ROWS_PER_START = 256  # a batch of several starts is applied a start at a time above this


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
    inconsistent_band: int = 0  # LULD bands not finite, positive and ordered

    @property
    def rejected(self) -> int:
        return (
            self.unknown_symbol
            + self.bad_price
            + self.bad_volume
            + self.inconsistent_bar
            + self.stale
            + self.inconsistent_band
        )


@dataclass(frozen=True, slots=True)
class Applied:
    """Which rows of a batch state applied: as new bars, as replacements of applied bars (a
    minute's per-second bars or its minute bar) and, of those, as corrections of a minute bar;
    the other rows were refused, duplicates or too late."""

    new: BoolArray
    replaced: BoolArray
    corrected: BoolArray

    @classmethod
    def none(cls, rows: int) -> Applied:
        return cls(*(np.zeros(rows, dtype=np.bool_) for _ in range(3)))

    @property
    def count(self) -> int:
        return int(self.new.sum() + self.replaced.sum())

    @property
    def applied(self) -> BoolArray:
        mask: BoolArray = self.new | self.replaced
        return mask

    def mark(self, rows: tuple[IntArray, IntArray, IntArray], positions: IntArray | None) -> None:
        """Mark a part's rows (positions in that part, which is ``positions`` of the batch)."""
        for mask, picked in zip((self.new, self.replaced, self.corrected), rows, strict=True):
            mask[picked if positions is None else positions[picked]] = True


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
        # The latest LULD bands (published 09:30-16:00 ET only), NaN before the first.
        self.luld_upper = np.full(n, np.nan)
        self.luld_lower = np.full(n, np.nan)

        # Windows over time, shared clocks for all symbols.
        self.minute_price = np.full((MINUTE_RING, n), np.nan)
        self._minute_index = np.full(MINUTE_RING, -1, dtype=np.int64)  # minute number stored
        self._last_snapshot_minute = self.now_ns // NS_PER_MINUTE
        self.second_volume = np.zeros((SECOND_RING, n), dtype=np.int64)
        self._second_index = np.full(SECOND_RING, -1, dtype=np.int64)
        self.volume_1m = np.zeros(n, dtype=np.int64)
        self._closed = False
        # Re-sent and corrected bars replace what they correct (state/recent_bars.py).
        self.recent = RecentBars(n)
        self._reset_recent()
        self._open_minute = np.full(n, -1, dtype=np.int64)  # minute of the bar that gave `open`
        self._regular_last_end_ns = np.zeros(n, dtype=np.int64)  # end of `regular_last`'s bar
        self._row_stamp = np.zeros(n, dtype=np.int64)  # scratch for `_no_row_twice`
        self._distinct = False  # the batch being applied: one start, no row twice
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

    def _fill_snapshots(
        self,
        rows: npt.NDArray[np.int32],
        start: IntArray,
        end: IntArray,
        close: FloatArray,
    ) -> None:
        """Snapshots already taken at a boundary at or after a bar's end take that bar in.

        A snapshot holds the close of each symbol's latest bar that ended by its boundary,
        whenever the bar arrives: a catch-up batch spanning many minutes, today's bars read back
        from the store, a bar that arrives after a scan cycle has already moved the clock past
        its end, a bar that arrives after a later one (a backfill from REST), or a correction
        all end in the snapshots a replay of the final bars in time order takes. A bar fills
        every boundary from its end up to the start of its symbol's next minute with data.
        Call after the bars are in ``self.recent`` (and marked as data) and before
        ``last_event_ns`` takes them.
        """
        last = self._last_snapshot_minute
        first = -(-end // NS_PER_MINUTE)  # the first boundary at or after each bar's end
        late = first <= last
        if not late.any():
            return
        pre_minute = self.times.pre_open_ns // NS_PER_MINUTE
        minute = (start - self.times.pre_open_ns) // NS_PER_MINUTE
        today = (minute >= 0) & (minute < DAY_MINUTES)
        # Bars after 20:00 ET have no record of minutes with data: the newest one counts.
        late &= today | (end >= self.last_event_ns[rows])
        if not late.any():
            return
        until = np.full(len(rows), last, dtype=np.int64)
        within = late & today
        if within.any():
            following = self._next_minute_with_data(rows[within], minute[within], last - pre_minute)
            until[within] = np.minimum(following + pre_minute, last)
        rows, first, until, close = rows[late], first[late], until[late], close[late]
        for boundary in range(max(int(first.min()), last - MINUTE_RING + 1), last + 1):
            slot = boundary % MINUTE_RING
            if self._minute_index[slot] != boundary:
                continue
            here = (first <= boundary) & (boundary <= until)
            self.minute_price[slot, rows[here]] = close[here]  # in start order: the latest wins

    def _next_minute_with_data(
        self, rows: npt.NDArray[np.int32], minutes: IntArray, through: int
    ) -> IntArray:
        """For each (row, day minute), the next day minute after it, up to ``through``, in
        which the row has a bar (a large number when none)."""
        never = np.iinfo(np.int64).max // 2
        lo, hi = int(minutes.min()) + 1, min(through, DAY_MINUTES - 1)
        if lo > hi:
            return np.full(len(rows), never, dtype=np.int64)
        distinct, inverse = np.unique(rows, return_inverse=True)
        span = np.arange(lo, hi + 1, dtype=np.int64)
        ask = minutes + 1 - lo
        asked = ask <= hi - lo
        found = np.full(len(rows), never, dtype=np.int64)
        step = max(1, NEXT_DATA_CELLS // len(span))  # rows at a time: a bounded matrix
        for begin in range(0, len(distinct), step):
            part = distinct[begin : begin + step].astype(np.int32)
            has = self.recent.data_matrix(part, lo, hi)  # (minutes, rows of this part)
            at = np.where(has, span[:, None], never)
            following = np.minimum.accumulate(at[::-1], axis=0)[::-1]  # next minute with data
            mine = asked & (inverse >= begin) & (inverse < begin + len(part))
            found[mine] = following[ask[mine], inverse[mine] - begin]
        return found

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
            self.luld_upper,
            self.luld_lower,
        ):
            column.fill(np.nan)
        self.volume.fill(0)
        self.dollar_volume.fill(0.0)
        self.slot_volume.fill(0)
        self._closed = False
        self._reset_recent()
        self._open_minute.fill(-1)
        self._regular_last_end_ns.fill(0)

    def _reset_recent(self) -> None:
        times = self.times
        self.recent.reset(
            int((times.regular_open_ns - times.pre_open_ns) // NS_PER_MINUTE),
            int((times.regular_close_ns - times.pre_open_ns) // NS_PER_MINUTE),
        )

    # ----------------------------------------------------------------- events

    def apply_event(self, event: FeedEvent) -> None:
        """Apply whatever a feed emitted (status events carry nothing for state)."""
        if isinstance(event, AggregateBatch):
            self.apply(event)
        elif isinstance(event, HaltEvent):
            self.apply_halt(event)
        elif isinstance(event, BandBatch):
            self.apply_bands(event)

    def apply_bands(self, batch: BandBatch) -> None:
        """The bands ``batch`` publishes replace the symbols' last; a row whose bands are not
        finite, positive and ordered (or whose symbol is unknown) is skipped and counted."""
        rows, upper, lower = batch.symbol_index, batch.upper, batch.lower
        with np.errstate(invalid="ignore"):
            good = (rows >= 0) & (rows < len(self.universe)) & (lower > 0) & (upper >= lower)
            good &= np.isfinite(upper)
        self.counters.inconsistent_band += int((~good).sum())
        self.luld_upper[rows[good]] = upper[good]
        self.luld_lower[rows[good]] = lower[good]

    def apply_halt(self, event: HaltEvent) -> None:
        if 0 <= event.symbol_index < len(self.universe):
            self.advance_to(event.ts_event_ns)
            self.halted[event.symbol_index] = event.halted

    def apply(self, batch: AggregateBatch) -> int:
        """Apply the rows of ``batch`` as an upsert (state/recent_bars.py); returns how many
        were applied (new bars and corrections; duplicates and late re-sends are not)."""
        return self.upsert(batch).count

    def upsert(self, batch: AggregateBatch) -> Applied:
        """Apply the rows of ``batch`` as an upsert; which rows were applied, and how."""
        applied = Applied.none(len(batch))
        if len(batch) == 0:
            return applied
        starts = batch.start_ns
        if starts[0] != starts[-1] or starts.min() != starts.max():
            groups = _by_start(starts)
            if len(batch) >= SPLIT_ROWS_PER_START * len(groups):
                # Many symbols per start (today's bars read back, a backfill): one start at a
                # time takes the fast path and ends the same as the whole batch in time order.
                for group in groups:
                    applied.mark(self._apply_one(batch.take(group)), group)
                return applied
        applied.mark(self._apply_one(batch), None)
        return applied

    def _apply_one(self, batch: AggregateBatch) -> tuple[IntArray, IntArray, IntArray]:
        """Apply ``batch``: the rows applied as new bars, as replacements (of per-second bars or
        of a minute bar) and, among those, as corrections of a minute bar."""
        self.advance_to(batch.ts_event_ns - 1)
        rows, keep = self._valid_rows(batch)
        if not keep.any():
            nothing = np.zeros(0, dtype=np.int64)
            return nothing, nothing, nothing
        new, replaced, corrected = self._upsert_rows(batch, rows, keep)
        applied = 0
        for picked, replacing in ((new, False), (replaced, True)):
            if not len(picked):
                continue
            at = (
                picked
                if self._distinct
                else picked[np.argsort(batch.start_ns[picked], kind="stable")]
            )
            columns = (
                rows[at],
                batch.start_ns[at],
                batch.open[at],
                batch.high[at],
                batch.low[at],
                batch.close[at],
                batch.volume[at],
                batch.vwap[at],
                int(batch.kind),
            )
            if replacing:
                self._apply_replaced(*columns)
            else:
                self._apply_new(*columns, distinct=self._distinct)
            applied += len(at)
        self.advance_to(batch.ts_event_ns)
        self.counters.accepted += applied
        return new, replaced, corrected

    def _upsert_rows(
        self, batch: AggregateBatch, rows: npt.NDArray[np.int32], keep: BoolArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Indices of ``batch`` to apply as new bars and as replacements of applied ones (and
        those of the replacements that correct a minute bar, not per-second ones)."""
        recent = self.recent
        valid = np.flatnonzero(keep)
        since_open = batch.start_ns[valid] - self.times.pre_open_ns
        later = since_open // NS_PER_MINUTE >= DAY_MINUTES  # after 20:00 ET: added as they come
        index, since_open = valid[~later], since_open[~later]
        minute = since_open // NS_PER_MINUTE
        second_of_minute = (since_open // NS_PER_SECOND) % 60
        r = rows[index]
        seconds = batch.kind is AggregateKind.SECOND
        # The common batch, one second (or minute) of many symbols each once, is told apart so
        # that the rest can use plain indexing.
        self._distinct = (
            not later.any()
            and len(since_open) > 0
            and since_open.min() == since_open.max()
            and self._no_row_twice(r)
        )
        repeated = 0
        if not self._distinct:
            # One bar per key within the batch: the first of a second, the last of a minute.
            key = (r.astype(np.int64) << 16) | (minute * 60 + (second_of_minute if seconds else 0))
            if seconds:
                _, first = np.unique(key, return_index=True)
            else:
                _, last = np.unique(key[::-1], return_index=True)
                first = len(key) - 1 - last
            repeated = len(key) - len(first)
            first.sort()
            index, minute, second_of_minute, r = (
                index[first],
                minute[first],
                second_of_minute[first],
                r[first],
            )
        inside = recent.claim(minute, self._distinct)
        slot = minute % recent.window
        source = np.where(inside, recent.source[slot, r], NONE)
        if seconds:
            superseded = inside & (source == MINUTE)
            late = ~inside
            again = inside & ~superseded & recent.had_second(r, minute, second_of_minute)
            fresh = ~(superseded | late | again)
            recent.superseded_seconds += int(superseded.sum())
            recent.late += int(late.sum())
            recent.duplicates += int(again.sum()) + repeated
            new, replace = fresh, np.zeros_like(fresh)
            corrects = replace
            recent.mark_second(r[fresh], minute[fresh], second_of_minute[fresh], self._distinct)
        else:
            replace = inside & (source != NONE)
            late = ~inside
            late[late] = recent.had_data(r[late], minute[late])
            new = ~(replace | late)
            # The same minute bar again (a duplicate, or a backfill of what came live) changes
            # nothing, to the bit: a replacement would sum the dollar volume again.
            same = replace & (source == MINUTE)
            if same.any():
                at = index[same]
                s_slot, s_row = slot[same], r[same]
                same[same] = (
                    (recent.volume[s_slot, s_row] == batch.volume[at])
                    & (recent.dollar_volume[s_slot, s_row] == batch.vwap[at] * batch.volume[at])
                    & (recent.high[s_slot, s_row] == batch.high[at])
                    & (recent.low[s_slot, s_row] == batch.low[at])
                )
                replace &= ~same
            corrects = replace & (source == MINUTE)
            recent.late += int(late.sum())
            recent.duplicates += repeated + int(same.sum())
        outside = new & ~inside  # the window marks its own minutes as they leave it
        recent.mark_data(r[outside], minute[outside])
        return np.concatenate([index[new], valid[later]]), index[replace], index[corrects]

    def _no_row_twice(self, rows: npt.NDArray[np.int32]) -> bool:
        """No symbol twice in ``rows``: each position written to its row reads back."""
        positions = np.arange(len(rows), dtype=np.int64)
        self._row_stamp[rows] = positions
        return bool((self._row_stamp[rows] == positions).all())

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

    def _valid_rows(self, batch: AggregateBatch) -> tuple[npt.NDArray[np.int32], BoolArray]:
        known, good_price, good_volume, consistent, fresh = self._checks(batch)
        counters = self.counters
        counters.unknown_symbol += int((~known).sum())
        counters.bad_price += int((known & ~good_price).sum())
        counters.bad_volume += int((known & good_price & ~good_volume).sum())
        counters.inconsistent_bar += int((known & good_price & good_volume & ~consistent).sum())
        counters.stale += int((known & good_price & good_volume & consistent & ~fresh).sum())
        return batch.symbol_index, known & good_price & good_volume & consistent & fresh

    def _apply_new(
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
        distinct: bool = False,
    ) -> None:
        """New bars (rows sorted by start; ``distinct``: one start, no row twice)."""
        times = self.times
        end = start + window_s * NS_PER_SECOND
        newer = end >= self.last_event_ns[rows]  # a late bar older than one applied is not
        self.price[rows[newer]] = close[newer]  # the last price; sorted by start: latest wins
        minute = (start - times.pre_open_ns) // NS_PER_MINUTE
        today = minute < DAY_MINUTES
        inside = np.zeros(len(rows), dtype=np.bool_)
        inside[today] = (
            self.recent.minute_of_slot[minute[today] % self.recent.window] == (minute[today])
        )
        source = SECONDS if window_s == 1 else MINUTE
        self.recent.add(
            rows[inside],
            minute[inside],
            volume[inside],
            (vwap * volume)[inside],
            high[inside],
            low[inside],
            source,
            distinct,
        )
        self.recent.settle(
            (vwap * volume)[~inside], high[~inside], low[~inside], minute[~inside], rows[~inside]
        )
        self._fill_snapshots(rows, start, end, close)
        scatter(np.maximum, self.last_event_ns, rows, end, distinct)
        scatter(np.add, self.volume, rows, volume, distinct)
        scatter(np.add, self.dollar_volume, rows, vwap * volume, distinct)
        scatter(np.fmax, self.hod, rows, high, distinct)
        scatter(np.fmin, self.lod, rows, low, distinct)

        slot = np.clip((start - times.pre_open_ns) // NS_PER_SLOT, 0, SLOTS_PER_DAY - 1)
        scatter(np.add, self.slot_volume, (rows, slot), volume.astype(np.uint32), distinct)

        pre = start < times.regular_open_ns
        if pre.any():
            scatter(np.fmax, self.pm_high, rows[pre], high[pre], distinct)
            scatter(np.fmin, self.pm_low, rows[pre], low[pre], distinct)
        regular = ~pre & (start < times.regular_close_ns)
        if regular.any():
            r_rows, r_minute = rows[regular], minute[regular]
            # The first regular-session aggregate's open is the official open (also when it
            # arrives after a later one).
            if distinct:
                first_rows, first_index = r_rows, np.arange(len(r_rows))
            else:
                first_rows, first_index = np.unique(r_rows, return_index=True)
            earlier = np.isnan(self.open[first_rows]) | (
                r_minute[first_index] < self._open_minute[first_rows]
            )
            first_rows, first_index = first_rows[earlier], first_index[earlier]
            self.open[first_rows] = open_[regular][first_index]
            self._open_minute[first_rows] = r_minute[first_index]
            scatter(np.fmax, self.regular_high, r_rows, high[regular], distinct)
            scatter(np.fmin, self.regular_low, r_rows, low[regular], distinct)
            r_end = end[regular]
            newest = r_end >= self._regular_last_end_ns[r_rows]
            self.regular_last[r_rows[newest]] = close[regular][newest]
            scatter(np.maximum, self._regular_last_end_ns, r_rows, r_end, distinct)

        # Bucketed by end: an aggregate counts in the last 60 s once it has ended inside them.
        self._add_second_volume(rows, end // NS_PER_SECOND, volume, distinct)

    def _apply_replaced(
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
        """Minute bars in place of what their minute contributed so far (rows sorted by start,
        one bar per (row, minute))."""
        times, recent = self.times, self.recent
        end = start + window_s * NS_PER_SECOND
        minute = (start - times.pre_open_ns) // NS_PER_MINUTE
        was_minute_bar = recent.source[minute % recent.window, rows] == MINUTE
        dollar_volume = vwap * volume
        old_volume, _ = recent.replace(rows, minute, volume, dollar_volume, high, low)
        change = volume - old_volume
        np.add.at(self.volume, rows, change)
        slot = np.clip((start - times.pre_open_ns) // NS_PER_SLOT, 0, SLOTS_PER_DAY - 1)
        np.add.at(self.slot_volume, (rows, slot), change.astype(np.uint32))  # modulo 2**32
        touched = np.unique(rows)
        self.dollar_volume[touched] = recent.dollar_volume_of(touched)
        for name, values in recent.extremes(touched).items():
            getattr(self, name)[touched] = values

        # The official open, the last price and the regular session's last price, where the
        # replaced minute is the one they came from.
        opened = self._open_minute[rows] == minute
        self.open[rows[opened]] = open_[opened]
        latest = self.last_event_ns[rows] <= end
        self.price[rows[latest]] = close[latest]
        regular = (start >= times.regular_open_ns) & (start < times.regular_close_ns)
        last_regular = regular & (self._regular_last_end_ns[rows] <= end)
        self.regular_last[rows[last_regular]] = close[last_regular]
        np.maximum.at(self._regular_last_end_ns, rows[regular], end[regular])
        if self._closed:
            self.close[rows[last_regular]] = close[last_regular]
        np.maximum.at(self.last_event_ns, rows, end)

        # Snapshots at the boundaries where this minute's close is the latest one.
        self._fill_snapshots(rows, start, end, close)

        # The rolling minute's volume, where it came from this minute bar (per-second bars,
        # when there are any, are what it counts).
        bucket = end // NS_PER_SECOND
        for second in np.unique(bucket[was_minute_bar]):
            ring = int(second) % SECOND_RING
            if self._second_index[ring] != second:
                continue
            here = was_minute_bar & (bucket == second)
            np.add.at(self.second_volume[ring], rows[here], change[here])
            np.add.at(self.volume_1m, rows[here], change[here])

    def _add_second_volume(
        self,
        rows: npt.NDArray[np.int32],
        second: IntArray,
        volume: IntArray,
        distinct: bool = False,
    ) -> None:
        newest = max(int(second.max()), self.now_ns // NS_PER_SECOND)
        recent = second > newest - SECOND_RING
        buckets = [int(second[0])] if distinct else np.unique(second[recent]).tolist()
        for s in buckets:
            if s <= newest - SECOND_RING:
                continue
            slot = s % SECOND_RING
            if self._second_index[slot] != s:
                self.volume_1m -= self.second_volume[slot]
                self.second_volume[slot] = 0
                self._second_index[slot] = s
            if distinct:
                self.second_volume[slot, rows] += volume
                self.volume_1m[rows] += volume
                continue
            here = recent & (second == s)
            np.add.at(self.second_volume[slot], rows[here], volume[here])
            np.add.at(self.volume_1m, rows[here], volume[here])


def _by_start(starts: IntArray) -> list[IntArray]:
    """Indices of each distinct start, in start order (stable within a start)."""
    order = np.argsort(starts, kind="stable")
    cuts = np.flatnonzero(np.diff(starts[order])) + 1
    return np.split(order, cuts)
