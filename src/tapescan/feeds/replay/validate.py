"""Validation of replay files in one streaming pass, with errors that name file, row and field.

Row checks run batch by batch on the canonical columns; duplicate keys need the whole file, so
the key columns of every batch stream into DuckDB, which groups them within its memory limit.
The first problem in file order is reported.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.replay.days import TradingDays
from tapescan.feeds.replay.duck import GuardedStream, duckdb_connection
from tapescan.feeds.replay.files import (
    SPECS,
    FileKind,
    FileSource,
    ReadLimits,
    ReplayFileError,
    ReplayFiles,
)
from tapescan.market.calendar import MarketCalendar, NotASessionError, market_calendar, ns_to_utc
from tapescan.model import NS_PER_MINUTE

__all__ = ["FileSummary", "ReplayFileError", "ReplaySummary", "validate_file", "validate_files"]

INT32_MAX = 2**31 - 1
ROW_INDEX = "row_index"

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class FileSummary:
    path: Path
    kind: FileKind
    rows: int
    symbols: tuple[str, ...]  # in order of first appearance
    sessions: tuple[dt.date, ...]  # ascending: trading days of minute bars, dates of daily bars


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
    """One pass over a file: checks each batch, keeps the summary, hands keys on to DuckDB."""

    def __init__(self, source: FileSource, days: TradingDays) -> None:
        self.source = source
        self.days = days
        self.kind = source.spec.kind
        self.checks = _checks(self.kind)
        self.rows = 0
        self.symbols: dict[str, None] = {}
        self.sessions: set[dt.date] = set()
        key_fields = [(name, _key_type(self.kind, name)) for name in source.spec.key]
        self.key_schema = pa.schema([*key_fields, (ROW_INDEX, pa.int64())])

    def keys(self) -> Iterator[pa.RecordBatch]:
        """The key columns and row index of each batch, up to the first problem."""
        for rows in self.source.batches():
            batch = rows.batch
            problem = self._problem(batch)
            good = batch if problem is None else batch.slice(0, problem.index)
            yield self._key_batch(rows.first, good)
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
        )

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

    def _key_batch(self, first: int, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [
            pc.cast(batch.column(name), self.key_schema.field(name).type)
            for name in self.source.spec.key
        ]
        index = pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))
        return pa.record_batch([*arrays, index], schema=self.key_schema)

    def _collect(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.symbols.update(dict.fromkeys(pc.unique(batch.column("symbol")).to_pylist()))
        if self.kind is FileKind.MINUTE_BARS:
            hours, _ = TradingDays.hours(_ints(batch, "ts"))
            self.sessions.update(self.days.of_hour(int(hour)) for hour in hours)
        elif self.kind is FileKind.DAILY_BARS:
            self.sessions.update(pc.unique(batch.column("date")).to_pylist())


def _key_type(kind: FileKind, name: str) -> pa.DataType:
    # Instants go to DuckDB as integer nanoseconds: its own timestamps would round to microseconds.
    return pa.int64() if name == "ts" else SPECS[kind].column(name).type


def _first_failure(scan: _Scan, limits: ReadLimits) -> ReplayFileError | None:
    """Runs the scan; its first problem, or the duplicated key whose last row comes first.

    A row problem stops the scan and DuckDB only sees the rows before it, so a duplicate found
    is always earlier in the file than the row problem.
    """
    stream = GuardedStream(scan.key_schema, scan.keys())
    key = ", ".join(f'"{name}"' for name in scan.source.spec.key)
    query = (
        f"SELECT {key}, min({ROW_INDEX}), max({ROW_INDEX}), count(*) FROM file_keys "
        f"GROUP BY {key} HAVING count(*) > 1 ORDER BY max({ROW_INDEX}) LIMIT 1"
    )
    with duckdb_connection(limits.memory_limit) as connection:
        connection.register("file_keys", stream.reader())
        found = connection.sql(query).fetchall()
    if not found:
        return stream.failure
    *values, first, last, count = found[0]
    return _duplicate_error(scan.source, values, first, last, count)


def _duplicate_error(
    source: FileSource, values: list[object], first: int, last: int, count: int
) -> ReplayFileError:
    shown = []
    for name, value in zip(source.spec.key, values, strict=True):
        text = utc_text(value) if name == "ts" and isinstance(value, int) else repr(value)
        if isinstance(value, dt.date):
            text = value.isoformat()
        shown.append(f"{name} {text}")
    others = f" ({count} rows have them)" if count > 2 else ""
    message = f"duplicate of {source.location(first)}: both have {' and '.join(shown)}{others}"
    return source.error(message, last, source.spec.key[-1])


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
    failure = _first_failure(scan, limits)
    if failure is not None:
        raise failure
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

    return ReplaySummary(
        minute_bars=check(files.minute_bars, FileKind.MINUTE_BARS),
        daily_bars=check(files.daily_bars, FileKind.DAILY_BARS),
        reference=None if files.reference is None else check(files.reference, FileKind.REFERENCE),
    )
