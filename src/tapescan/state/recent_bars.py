"""What each symbol's last 16 minutes contributed, so that a re-sent bar can replace the one it
corrects instead of adding to it.

Massive re-sends per-minute aggregates for up to 15 minutes when late trades change them, and a
reconnect's backfill overlaps what already arrived. Ingest is therefore an upsert by (symbol,
bar length, bar start):

- a minute bar for a minute already applied replaces that minute's contribution (volume, dollar
  volume, high and low; open, price and the minute snapshots where that bar is the one they
  hold), whether the minute came from an earlier minute bar or from per-second bars: a minute
  bar supersedes the per-second bars of its minute;
- a per-second bar counts once: the same second again (a duplicate or a re-sent one) changes
  nothing, and a second of a minute whose minute bar has come changes nothing; corrections of
  per-second bars reach the state through the minute bar, which Massive sends at the minute's
  end and re-sends when it changes;
- a bar for a minute older than the window is counted (``late``) and skipped when that minute
  already had data (the state no longer holds what it contributed); a minute bar for a minute
  with no data yet is added, however old (catch-up, backfill); per-second bars older than the
  window are counted and skipped.

Memory for 12,000 symbols: 16 minutes x (volume int64, dollar volume, high, low float64, source
int8) = 6.3 MB; which seconds of those minutes were applied, one bit each (16 x 12,000 uint64)
= 1.5 MB; which minutes of the day had any bar, one bit each (960 x 12,000 bits) =
1.4 MB; the contributions of minutes that left the window (dollar volume, day high and low,
pre-market and regular-session high and low) 7 x 12,000 x 8 B = 0.7 MB. About 10 MB in all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.state.scatter import scatter

WINDOW_MINUTES = 16  # Massive corrects bars for up to 15 minutes
DAY_MINUTES = 960  # 04:00 to 20:00 ET

NONE, SECONDS, MINUTE = 0, 1, 2  # where a minute's contribution came from

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.int32]


def _bits_test(bits: npt.NDArray[np.uint8], major: IntArray, rows: Rows) -> BoolArray:
    """bits[major, row] for each pair (rows packed eight to a byte)."""
    mask = np.left_shift(1, rows & 7).astype(np.uint8)
    hit: BoolArray = (bits[major, rows >> 3] & mask) != 0
    return hit


def _bits_set(bits: npt.NDArray[np.uint8], major: IntArray, rows: Rows, symbols: int) -> None:
    if not len(rows):
        return
    first = int(major[0])
    if (major == first).all():  # one second or one minute: the common batch, done by plane
        plane = np.unpackbits(bits[first], count=symbols, bitorder="little")
        plane[rows] = 1
        bits[first] = np.packbits(plane, bitorder="little")
        return
    mask = np.left_shift(1, rows & 7).astype(np.uint8)
    np.bitwise_or.at(bits, (major, rows >> 3), mask)


class RecentBars:
    """The last WINDOW_MINUTES minutes of every symbol, by minute of the day (0 = 04:00 ET)."""

    def __init__(self, symbols: int) -> None:
        w, n = WINDOW_MINUTES, symbols
        self.symbols = n
        self.window = w
        self.minute_of_slot = np.full(w, -1, dtype=np.int64)
        self.source = np.zeros((w, n), dtype=np.int8)
        self.volume = np.zeros((w, n), dtype=np.int64)
        self.dollar_volume = np.zeros((w, n))
        self.high = np.full((w, n), np.nan)
        self.low = np.full((w, n), np.nan)
        packed = (n + 7) // 8
        self._seconds = np.zeros((w, n), dtype=np.uint64)  # bit k: second k of the minute
        self._data = np.zeros((DAY_MINUTES, packed), dtype=np.uint8)
        # Contributions of the minutes that left the window, by part of the day.
        self.settled_dollar_volume = np.zeros(n)
        self.settled_high = np.full(n, np.nan)
        self.settled_low = np.full(n, np.nan)
        self.settled_pm_high = np.full(n, np.nan)
        self.settled_pm_low = np.full(n, np.nan)
        self.settled_regular_high = np.full(n, np.nan)
        self.settled_regular_low = np.full(n, np.nan)
        self.late = 0
        self.duplicates = 0
        self.superseded_seconds = 0
        # Minutes of the day where the pre-market ends and the regular session ends.
        self.regular_open_minute = 330
        self.regular_close_minute = 720

    def reset(self, regular_open_minute: int, regular_close_minute: int) -> None:
        """A new session: nothing applied yet."""
        self.minute_of_slot.fill(-1)
        self.source.fill(NONE)
        self.volume.fill(0)
        self.dollar_volume.fill(0.0)
        self.high.fill(np.nan)
        self.low.fill(np.nan)
        self._seconds.fill(0)
        self._data.fill(0)
        self.settled_dollar_volume.fill(0.0)
        for column in (
            self.settled_high,
            self.settled_low,
            self.settled_pm_high,
            self.settled_pm_low,
            self.settled_regular_high,
            self.settled_regular_low,
        ):
            column.fill(np.nan)
        self.regular_open_minute = regular_open_minute
        self.regular_close_minute = regular_close_minute

    # ---------------------------------------------------------------- the window

    def claim(self, minutes: IntArray, one_minute: bool = False) -> BoolArray:
        """Make room for ``minutes`` (folding out what they push out of the window); True where
        a minute is inside the window afterwards. ``one_minute``: all of them are the same."""
        if one_minute:
            minute, slot = int(minutes[0]), int(minutes[0]) % WINDOW_MINUTES
            if self.minute_of_slot[slot] < minute:
                self._fold(slot)
                self.minute_of_slot[slot] = minute
            return np.full(len(minutes), self.minute_of_slot[slot] == minute)
        for minute in np.unique(minutes)[-WINDOW_MINUTES:]:
            slot = int(minute) % WINDOW_MINUTES
            if self.minute_of_slot[slot] < minute:
                self._fold(slot)
                self.minute_of_slot[slot] = minute
        inside: BoolArray = self.minute_of_slot[minutes % WINDOW_MINUTES] == minutes
        return inside

    def _fold(self, slot: int) -> None:
        """The minute held in ``slot`` leaves the window: its high and low become settled."""
        minute = int(self.minute_of_slot[slot])
        if 0 <= minute < DAY_MINUTES:
            self._data[minute] |= np.packbits(self.source[slot] != NONE, bitorder="little")
        if minute >= 0:
            rows = np.arange(self.symbols, dtype=np.int32)
            self.settle(self.dollar_volume[slot], self.high[slot], self.low[slot], minute, rows)
        self.source[slot] = NONE
        self.volume[slot] = 0
        self.dollar_volume[slot] = 0.0
        self.high[slot] = np.nan
        self.low[slot] = np.nan
        self._seconds[slot] = 0

    def settle(
        self,
        dollar_volume: FloatArray,
        high: FloatArray,
        low: FloatArray,
        minute: int | IntArray,
        rows: Rows,
    ) -> None:
        """What no correction can change any more (by minute of the day)."""
        if not len(rows):
            return
        minute = np.broadcast_to(np.asarray(minute, dtype=np.int64), rows.shape)
        np.add.at(self.settled_dollar_volume, rows, dollar_volume)
        np.fmax.at(self.settled_high, rows, high)
        np.fmin.at(self.settled_low, rows, low)
        pre = minute < self.regular_open_minute
        np.fmax.at(self.settled_pm_high, rows[pre], high[pre])
        np.fmin.at(self.settled_pm_low, rows[pre], low[pre])
        regular = ~pre & (minute < self.regular_close_minute)
        np.fmax.at(self.settled_regular_high, rows[regular], high[regular])
        np.fmin.at(self.settled_regular_low, rows[regular], low[regular])

    # ---------------------------------------------------------------- bookkeeping

    def had_data(self, rows: Rows, minutes: IntArray) -> BoolArray:
        """Whether a minute that is not in the window had a bar."""
        return _bits_test(self._data, minutes, rows)

    def mark_data(self, rows: Rows, minutes: IntArray) -> None:
        _bits_set(self._data, minutes, rows, self.symbols)

    def had_second(self, rows: Rows, minutes: IntArray, seconds: IntArray) -> BoolArray:
        seen = self._seconds[minutes % WINDOW_MINUTES, rows] >> seconds.astype(np.uint64)
        hit: BoolArray = (seen & np.uint64(1)) != 0
        return hit

    def mark_second(
        self, rows: Rows, minutes: IntArray, seconds: IntArray, distinct: bool = False
    ) -> None:
        at = (minutes % WINDOW_MINUTES, rows)
        bit = np.left_shift(np.uint64(1), seconds.astype(np.uint64))
        if distinct:
            self._seconds[at] |= bit
        else:
            np.bitwise_or.at(self._seconds, at, bit)

    def add(
        self,
        rows: Rows,
        minutes: IntArray,
        volume: IntArray,
        dollar_volume: FloatArray,
        high: FloatArray,
        low: FloatArray,
        source: int,
        distinct: bool = False,
    ) -> None:
        """New bars inside the window add to their minute's contribution (``distinct``: one
        minute, no row twice)."""
        if not len(rows):
            return
        slots: IntArray | int = minutes % WINDOW_MINUTES
        if distinct:  # one minute, each row once
            slots = int(minutes[0] % WINDOW_MINUTES)
        at = (slots, rows)
        scatter(np.add, self.volume, at, volume, distinct)
        scatter(np.add, self.dollar_volume, at, dollar_volume, distinct)
        scatter(np.fmax, self.high, at, high, distinct)
        scatter(np.fmin, self.low, at, low, distinct)
        self.source[at] = np.maximum(self.source[at], source)  # one value: repeats write it alike

    def replace(
        self,
        rows: Rows,
        minutes: IntArray,
        volume: IntArray,
        dollar_volume: FloatArray,
        high: FloatArray,
        low: FloatArray,
    ) -> tuple[IntArray, FloatArray]:
        """Minute bars in place of their minute's contribution (one per (row, minute)); returns
        the volume and dollar volume they replace."""
        slots = minutes % WINDOW_MINUTES
        old_volume = self.volume[slots, rows].copy()
        old_dollar_volume = self.dollar_volume[slots, rows].copy()
        self.volume[slots, rows] = volume
        self.dollar_volume[slots, rows] = dollar_volume
        self.high[slots, rows] = high
        self.low[slots, rows] = low
        self.source[slots, rows] = MINUTE
        return old_volume, old_dollar_volume

    def dollar_volume_of(self, rows: Rows) -> FloatArray:
        """Today's dollar volume of ``rows``, summed again from what each minute contributed
        (a correction's difference would leave the rounding of the replaced values behind)."""
        total: FloatArray = self.settled_dollar_volume[rows] + self.dollar_volume[:, rows].sum(
            axis=0
        )
        return total

    def extremes(self, rows: Rows) -> dict[str, FloatArray]:
        """Day, pre-market and regular-session high and low of ``rows`` from what was applied."""
        minutes = self.minute_of_slot
        pre = (minutes >= 0) & (minutes < self.regular_open_minute)
        regular = (minutes >= self.regular_open_minute) & (minutes < self.regular_close_minute)
        high, low = self.high[:, rows], self.low[:, rows]
        nan = np.full(high.shape, np.nan)
        with np.errstate(invalid="ignore"):
            return {
                "hod": np.fmax(self.settled_high[rows], np.fmax.reduce(high, axis=0)),
                "lod": np.fmin(self.settled_low[rows], np.fmin.reduce(low, axis=0)),
                "pm_high": np.fmax(
                    self.settled_pm_high[rows],
                    np.fmax.reduce(np.where(pre[:, None], high, nan), axis=0),
                ),
                "pm_low": np.fmin(
                    self.settled_pm_low[rows],
                    np.fmin.reduce(np.where(pre[:, None], low, nan), axis=0),
                ),
                "regular_high": np.fmax(
                    self.settled_regular_high[rows],
                    np.fmax.reduce(np.where(regular[:, None], high, nan), axis=0),
                ),
                "regular_low": np.fmin(
                    self.settled_regular_low[rows],
                    np.fmin.reduce(np.where(regular[:, None], low, nan), axis=0),
                ),
            }

    def data_matrix(self, rows: Rows, first: int, last: int) -> BoolArray:
        """``has[m - first, i]``: whether ``rows[i]`` had a bar in day minute m, for m in
        [first, last] (the window's minutes from their sources, older ones from the day's
        record)."""
        minutes = np.arange(first, last + 1, dtype=np.int64)
        mask = np.left_shift(1, rows & 7).astype(np.uint8)
        has: BoolArray = (self._data[first : last + 1][:, rows >> 3] & mask) != 0
        slots = minutes % self.window
        held = self.minute_of_slot[slots] == minutes
        if held.any():
            has[held] = self.source[slots[held]][:, rows] != NONE
        return has
