"""Validation of replay files in one streaming pass, with errors that name file, row and field.

Row checks run batch by batch on the canonical columns; duplicate keys are found as the rows
stream by, with one bit per possible key (feeds/replay/seen.py), so memory does not grow with
the number of rows. The first problem in file order is reported.
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

from tapescan.feeds.replay.days import TradingDays
from tapescan.feeds.replay.files import (
    SPECS,
    FileKind,
    FileSource,
    ReadLimits,
    ReplayFileError,
    ReplayFiles,
)
from tapescan.feeds.replay.seen import SeenKeys
from tapescan.market.calendar import MarketCalendar, NotASessionError, market_calendar, ns_to_utc
from tapescan.model import NS_PER_MINUTE
from tapescan.ops.memory import release_free_memory

__all__ = ["FileSummary", "ReplayFileError", "ReplaySummary", "validate_file", "validate_files"]

INT32_MAX = 2**31 - 1

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class FileSummary:
    path: Path
    kind: FileKind
    rows: int
    symbols: tuple[str, ...]  # in order of first appearance
    sessions: tuple[dt.date, ...]  # ascending: trading days of minute bars, dates of daily bars
    time_ordered: bool = False  # minute bars: every bar starts no earlier than the row before


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    minute_bars: FileSummary
    daily_bars: FileSummary
    reference: FileSummary | None  # None when the replay has no reference file


@dataclass(frozen=True, slots=True)
class _Problem:
    index: int  # 0-based, within the batch
    field: str
    message: str


_Check = Callable[[pa.RecordBatch], _Problem | None]


def utc_text(ts_ns: int) -> str:
    return ns_to_utc(ts_ns).isoformat().replace("+00:00", "Z")


def _number(value: np.floating | float) -> str:
    return repr(float(value))  # 9.5, not numpy's np.float64(9.5)


def _first(mask: BoolArray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def _valid(batch: pa.RecordBatch, name: str) -> BoolArray:
    valid: BoolArray = pc.is_valid(batch.column(name)).to_numpy(zero_copy_only=False)
    return valid


def _floats(batch: pa.RecordBatch, name: str) -> npt.NDArray[np.float64]:
    column = pc.fill_null(batch.column(name), np.nan)
    values: npt.NDArray[np.float64] = column.to_numpy(zero_copy_only=False)
    return values


def _ints(batch: pa.RecordBatch, name: str) -> npt.NDArray[np.int64]:
    """An integer or timestamp column as int64 (nanoseconds), nulls as 0."""
    column = pc.cast(batch.column(name), pa.int64())
    values: npt.NDArray[np.int64] = pc.fill_null(column, 0).to_numpy()
    return values


def _present(name: str) -> _Check:
    def check(batch: pa.RecordBatch) -> _Problem | None:
        missing = ~_valid(batch, name)
        if pa.types.is_string(batch.schema.field(name).type):
            blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(batch.column(name))), 0)
            missing |= pc.fill_null(blank, False).to_numpy(zero_copy_only=False)
        index = _first(missing)
        return None if index is None else _Problem(index, name, f"{name} is missing")

    return check


def _price(name: str) -> _Check:
    def check(batch: pa.RecordBatch) -> _Problem | None:
        values = _floats(batch, name)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(values) & (values > 0)) & _valid(batch, name)
        index = _first(bad)
        if index is None:
            return None
        value = values[index]
        reason = "not a finite number" if not np.isfinite(value) else "not a positive price"
        return _Problem(index, name, f"{name} {_number(value)} is {reason}")

    return check


def _high_not_below_low(batch: pa.RecordBatch) -> _Problem | None:
    high, low = _floats(batch, "high"), _floats(batch, "low")
    index = _first(high < low)
    if index is None:
        return None
    return _Problem(
        index, "high", f"high {_number(high[index])} is below low {_number(low[index])}"
    )


def _within_range(name: str) -> _Check:
    def check(batch: pa.RecordBatch) -> _Problem | None:
        value, high, low = _floats(batch, name), _floats(batch, "high"), _floats(batch, "low")
        index = _first((value < low) | (value > high))
        if index is None:
            return None
        message = (
            f"{name} {_number(value[index])} is outside the bar's range, "
            f"low {_number(low[index])} to high {_number(high[index])}"
        )
        return _Problem(index, name, message)

    return check


def _count(name: str, most: int | None = None) -> _Check:
    def check(batch: pa.RecordBatch) -> _Problem | None:
        values = _ints(batch, name)
        index = _first(values < 0)
        if index is not None:
            return _Problem(index, name, f"{name} {int(values[index])} is negative")
        index = None if most is None else _first(values > most)
        if index is None:
            return None
        return _Problem(index, name, f"{name} {int(values[index])} is more than {most}")

    return check


def _amount(name: str) -> _Check:
    def check(batch: pa.RecordBatch) -> _Problem | None:
        values = _floats(batch, name)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(values) & (values >= 0)) & _valid(batch, name)
        index = _first(bad)
        if index is None:
            return None
        return _Problem(
            index, name, f"{name} {_number(values[index])} is not a non-negative number"
        )

    return check


def _whole_minute(batch: pa.RecordBatch) -> _Problem | None:
    ts = _ints(batch, "ts")
    index = _first(ts % NS_PER_MINUTE != 0)
    if index is None:
        return None
    message = f"ts {utc_text(int(ts[index]))} is not on a whole minute (ts is the bar's start)"
    return _Problem(index, "ts", message)


def _bar_checks() -> list[_Check]:
    prices = ("open", "high", "low", "close")
    return [
        *(_price(name) for name in prices),
        _high_not_below_low,
        _within_range("open"),
        _within_range("close"),
        _count("volume"),
    ]


def _checks(kind: FileKind) -> list[_Check]:
    """Row checks in the order their problems are reported when one row has several."""
    required = [c.name for c in SPECS[kind].columns if c.required]
    present = [_present(name) for name in required]
    if kind is FileKind.MINUTE_BARS:
        optional = [_price("vwap"), _count("trades", INT32_MAX)]
        return [*present, _whole_minute, *_bar_checks(), *optional]
    if kind is FileKind.DAILY_BARS:
        return [*present, *_bar_checks()]
    counts = [_count("float_shares"), _count("shares_outstanding"), _amount("market_cap")]
    return [*present, *counts]


def _first_problem(batch: pa.RecordBatch, checks: list[_Check]) -> _Problem | None:
    found = [(p.index, order, p) for order, check in enumerate(checks) if (p := check(batch))]
    return min(found, key=lambda item: item[:2])[2] if found else None


class _Scan:
    """One pass over a file: checks each batch, finds repeated keys, keeps the summary."""

    def __init__(self, source: FileSource, days: TradingDays) -> None:
        self.source = source
        self.days = days
        self.kind = source.spec.kind
        self.checks = _checks(self.kind)
        self.rows = 0
        self.symbols: dict[str, None] = {}
        self.sessions: set[dt.date] = set()
        self.time_ordered = True
        self._last_ts: int | None = None
        self._seen = SeenKeys()

    def run(self) -> None:
        """Raise ReplayFileError at the file's first problem: a bad row or a repeated key."""
        for rows in self.source.batches():
            batch = rows.batch
            problem = self._problem(batch)
            good = batch if problem is None else batch.slice(0, problem.index)
            repeated = self._seen.add(*self._keys(good))
            if repeated is not None:
                raise _duplicate_error(self.source, rows.first + repeated, good.slice(repeated, 1))
            if problem is not None:
                raise self.source.error(problem.message, rows.first + problem.index, problem.field)
            self._collect(batch)

    def summary(self) -> FileSummary:
        return FileSummary(
            path=self.source.path,
            kind=self.kind,
            rows=self.rows,
            symbols=tuple(self.symbols),
            sessions=tuple(sorted(self.sessions)),
            time_ordered=self.time_ordered,
        )

    def _keys(self, batch: pa.RecordBatch) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Each row's key as (symbol id, whole number): the minute, the day, or 0."""
        symbols = self._seen.symbol_ids(batch.column("symbol"))
        if self.kind is FileKind.MINUTE_BARS:
            values = _ints(batch, "ts") // NS_PER_MINUTE
        elif self.kind is FileKind.DAILY_BARS:
            values = pc.cast(batch.column("date"), pa.int32()).to_numpy().astype(np.int64)
        else:
            values = np.zeros(batch.num_rows, dtype=np.int64)
        return symbols, values

    def _problem(self, batch: pa.RecordBatch) -> _Problem | None:
        problem = _first_problem(batch, self.checks)
        if self.kind is FileKind.MINUTE_BARS:
            outside = self._outside_calendar(batch)
            if outside is not None and (problem is None or outside.index < problem.index):
                return outside
        return problem

    def _outside_calendar(self, batch: pa.RecordBatch) -> _Problem | None:
        """The first bar whose instant the market calendar does not cover."""
        rows = np.flatnonzero(_valid(batch, "ts"))
        ts = _ints(batch, "ts")
        hours, inverse = TradingDays.hours(ts[rows])
        problems = []
        for position, hour in enumerate(hours):
            try:
                self.days.of_hour(int(hour))
            except NotASessionError as exc:
                index = int(rows[np.argmax(inverse == position)])
                problems.append(_Problem(index, "ts", f"ts {utc_text(int(ts[index]))}: {exc}"))
        return min(problems, key=lambda problem: problem.index, default=None)

    def _collect(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.symbols.update(dict.fromkeys(pc.unique(batch.column("symbol")).to_pylist()))
        if self.kind is FileKind.MINUTE_BARS:
            ts = _ints(batch, "ts")
            self._note_order(ts)
            hours, _ = TradingDays.hours(ts)
            self.sessions.update(self.days.of_hour(int(hour)) for hour in hours)
        elif self.kind is FileKind.DAILY_BARS:
            self.sessions.update(pc.unique(batch.column("date")).to_pylist())

    def _note_order(self, ts: npt.NDArray[np.int64]) -> None:
        """Whether every bar so far starts no earlier than the one before it."""
        if not self.time_ordered or len(ts) == 0:
            return
        after_last = self._last_ts is None or int(ts[0]) >= self._last_ts
        self.time_ordered = after_last and bool(np.all(ts[1:] >= ts[:-1]))
        self._last_ts = int(ts[-1])


def _duplicate_error(source: FileSource, index: int, row: pa.RecordBatch) -> ReplayFileError:
    """Row ``index`` repeats the key of an earlier row: a second pass finds it and counts them."""
    key = source.spec.key
    wanted = {name: row.column(name)[0] for name in key}
    first, count = index, 0
    try:
        for rows in source.batches(key):
            same = np.ones(rows.batch.num_rows, dtype=bool)
            for name, value in wanted.items():
                equal = pc.equal(rows.batch.column(name), value)
                same &= pc.fill_null(equal, False).to_numpy(zero_copy_only=False)
            if count == 0 and same.any():
                first = rows.first + int(np.argmax(same))
            count += int(same.sum())
    except ReplayFileError:
        pass  # a row it cannot read (later in the file): count up to there
    shown = []
    for name in key:
        value = wanted[name].as_py()
        if name == "ts":
            text = utc_text(int(pc.cast(wanted[name], pa.int64()).as_py()))
        elif isinstance(value, dt.date):
            text = value.isoformat()
        else:
            text = repr(value)
        shown.append(f"{name} {text}")
    others = f" ({count} rows have them)" if count > 2 else ""
    message = f"duplicate of {source.location(first)}: both have {' and '.join(shown)}{others}"
    return source.error(message, index, key[-1])


def validate_file(
    path: Path,
    kind: FileKind,
    *,
    calendar: MarketCalendar | None = None,
    limits: ReadLimits | None = None,
) -> FileSummary:
    """Check one file from end to end; raise ReplayFileError at its first problem."""
    limits = limits or ReadLimits()
    source = FileSource(path, kind, limits)
    scan = _Scan(source, TradingDays(calendar or market_calendar()))
    scan.run()
    if kind is FileKind.MINUTE_BARS and scan.rows == 0:
        raise ReplayFileError(path, "there are no minute bars to replay")
    return scan.summary()


def validate_files(
    files: ReplayFiles,
    *,
    calendar: MarketCalendar | None = None,
    limits: ReadLimits | None = None,
) -> ReplaySummary:
    """Check the three files of a replay; raise ReplayFileError at the first problem."""

    def check(path: Path, kind: FileKind) -> FileSummary:
        return validate_file(path, kind, calendar=calendar, limits=limits)

    try:
        return ReplaySummary(
            minute_bars=check(files.minute_bars, FileKind.MINUTE_BARS),
            daily_bars=check(files.daily_bars, FileKind.DAILY_BARS),
            reference=None
            if files.reference is None
            else check(files.reference, FileKind.REFERENCE),
        )
    finally:
        # A pass over a large file leaves freed batches in Arrow's pool and the C heap.
        pa.default_memory_pool().release_unused()
        release_free_memory()
