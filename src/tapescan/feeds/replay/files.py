"""The three replay file kinds (docs/data-formats.md) streamed as batches of one typed schema.

Parquet and CSV go through the same path: columns come in as they are stored (CSV always as
text) and are converted to the kind's canonical schema here. Validation and reading both use
this conversion, so a file that validates is read the same way everywhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tapescan.feeds.base import FeedError

UTC_NS = pa.timestamp("ns", tz="UTC")
PARQUET_BUFFER_BYTES = 1 << 20  # read buffer per Parquet column while streaming a file


class ReplayFileError(FeedError):
    """A replay file cannot be used; the message names the file, the row and the field."""

    def __init__(
        self,
        path: Path,
        problem: str,
        *,
        where: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.row = row  # 1-based data row, None for problems with the file as a whole
        self.field = field
        parts = [part for part in (where, f"field '{field}'" if field else None) if part]
        prefix = f"{path.name}: {', '.join(parts)}" if parts else path.name
        super().__init__(f"{prefix}: {problem}")


class FileKind(enum.Enum):
    MINUTE_BARS = "minute bars"
    DAILY_BARS = "daily bars"
    REFERENCE = "reference"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = True
    rounded: bool = False  # a whole number that sources give with fractions: round it


@dataclass(frozen=True, slots=True)
class FileSpec:
    kind: FileKind
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # the columns that identify a row; two rows may not share them

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(column.name, column.type) for column in self.columns])

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)


def _prices() -> tuple[Column, ...]:
    return tuple(Column(name, pa.float64()) for name in ("open", "high", "low", "close"))


SPECS: dict[FileKind, FileSpec] = {
    FileKind.MINUTE_BARS: FileSpec(
        FileKind.MINUTE_BARS,
        (
            Column("symbol", pa.string()),
            Column("ts", UTC_NS),
            *_prices(),
            Column("volume", pa.int64()),
            Column("vwap", pa.float64(), required=False),
            Column("trades", pa.int64(), required=False),
        ),
        key=("symbol", "ts"),
    ),
    FileKind.DAILY_BARS: FileSpec(
        FileKind.DAILY_BARS,
        (
            Column("symbol", pa.string()),
            Column("date", pa.date32()),
            *_prices(),
            Column("volume", pa.int64()),
        ),
        key=("symbol", "date"),
    ),
    FileKind.REFERENCE: FileSpec(
        FileKind.REFERENCE,
        (
            Column("symbol", pa.string()),
            Column("name", pa.string(), required=False),
            Column("exchange", pa.string(), required=False),
            # Vendors derive share counts (e.g. from market cap / price) and send fractions.
            Column("float_shares", pa.int64(), required=False, rounded=True),
            Column("shares_outstanding", pa.int64(), required=False, rounded=True),
            Column("market_cap", pa.float64(), required=False),
            Column("sector", pa.string(), required=False),
        ),
        key=("symbol",),
    ),
}


@dataclass(frozen=True, slots=True)
class ReplayFiles:
    minute_bars: Path
    daily_bars: Path
    reference: Path | None = None  # optional: without it symbols have no reference data


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How much of a file is held in memory at once."""

    batch_rows: int = 65_536  # Parquet rows per batch; rows per batch fetched from DuckDB
    csv_block_bytes: int = 4 << 20  # CSV text parsed per batch
    # DuckDB's cap when it sorts a minute-bar file that is not in time order; it spills to a
    # temporary directory beyond this. Files in time order and validation do not use DuckDB.
    memory_limit: str = "128MB"


@dataclass(frozen=True, slots=True)
class Rows:
    """Consecutive rows of a file in the canonical schema; ``first`` is the 0-based row index."""

    first: int
    batch: pa.RecordBatch


class _WrongTypeError(Exception):
    """The stored column type cannot hold the expected kind of value at all."""


_Converter = Callable[[pa.Array], pa.Array]

_DESCRIPTIONS = {
    pa.string(): "text",
    pa.float64(): "a number",
    pa.int64(): "a whole number",
    UTC_NS: "a timestamp with a UTC offset, e.g. 2026-11-25T14:30:00Z",
    pa.date32(): "a date, e.g. 2026-11-25",
}


def _is_text(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or (pa.types.is_dictionary(type_) and pa.types.is_string(type_.value_type))
    )


def _is_number(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_)
    )


def _text(raw: pa.Array) -> pa.Array:
    # CSV writers pad fields now and then; a stray space should not fail a number or a date.
    return pc.utf8_trim_whitespace(pc.cast(raw, pa.string()))


def _to_string(raw: pa.Array) -> pa.Array:
    if not _is_text(raw.type):
        raise _WrongTypeError
    return pc.cast(raw, pa.string())


def _to_float(raw: pa.Array) -> pa.Array:
    if _is_text(raw.type):
        return pc.cast(_text(raw), pa.float64())
    if not _is_number(raw.type):
        raise _WrongTypeError
    return pc.cast(raw, pa.float64())


def _to_int(raw: pa.Array) -> pa.Array:
    if _is_text(raw.type):
        text = _text(raw)
        try:
            return pc.cast(text, pa.int64())
        except pa.ArrowInvalid:
            # Tools that store whole numbers as floats write "1200.0"; a fraction still fails.
            return pc.cast(pc.cast(text, pa.float64()), pa.int64())
    if not _is_number(raw.type):
        raise _WrongTypeError
    return pc.cast(raw, pa.int64())


def _to_rounded_int(raw: pa.Array) -> pa.Array:
    """A whole number, fractions rounded to the nearest (halves to even)."""
    try:
        return _to_int(raw)
    except pa.ArrowInvalid:
        numbers = _to_float(raw)
        return pc.cast(pc.round(numbers), pa.int64())


def _to_timestamp(raw: pa.Array) -> pa.Array:
    if _is_text(raw.type):
        return pc.cast(_text(raw), UTC_NS)
    if not pa.types.is_timestamp(raw.type) or raw.type.tz is None:
        raise _WrongTypeError
    return pc.cast(raw, UTC_NS)


def _to_date(raw: pa.Array) -> pa.Array:
    if _is_text(raw.type):
        return pc.cast(_text(raw), pa.date32())
    if pa.types.is_date(raw.type):
        return pc.cast(raw, pa.date32())
    if not pa.types.is_timestamp(raw.type) or raw.type.tz is not None:
        raise _WrongTypeError
    # Dataframe libraries store dates as midnight timestamps; any other time is not a date.
    days = pc.cast(raw, pa.date32())
    if pc.all(pc.equal(pc.cast(days, raw.type), raw)).as_py() is False:
        raise pa.ArrowInvalid("timestamp is not at midnight")
    return days


_CONVERTERS: dict[pa.DataType, _Converter] = {
    pa.string(): _to_string,
    pa.float64(): _to_float,
    pa.int64(): _to_int,
    UTC_NS: _to_timestamp,
    pa.date32(): _to_date,
}


def _first_failure(raw: pa.Array, convert: _Converter) -> int:
    """Index of the first value ``convert`` rejects: the shortest failing prefix, by bisection."""
    good, bad = 0, len(raw)
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            convert(raw.slice(0, middle))
        except pa.ArrowInvalid:
            bad = middle
        else:
            good = middle
    return bad - 1


def _first_value(raw: pa.Array) -> int | None:
    valid = pc.indices_nonzero(pc.is_valid(raw))
    return int(valid[0].as_py()) if len(valid) else None


def _show(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


class FileSource:
    """One replay file of a known kind, streamed as canonical batches with their row numbers."""

    def __init__(self, path: Path, kind: FileKind, limits: ReadLimits | None = None) -> None:
        self.path = path
        self.spec = SPECS[kind]
        self.limits = limits or ReadLimits()
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise ReplayFileError(
                path, f"unsupported file type '{path.suffix}'; use .parquet or .csv"
            )
        self.is_csv = suffix == ".csv"
        if not path.is_file():
            raise ReplayFileError(path, f"{kind.value} file not found at {path}")
        self.stored = self._csv_header() if self.is_csv else self._parquet_schema()
        self._check_columns()

    def error(
        self, problem: str, index: int | None = None, field: str | None = None
    ) -> ReplayFileError:
        """An error at 0-based row ``index`` (None: the header or schema)."""
        if index is None:
            where = "header (line 1)" if self.is_csv else "schema"
            return ReplayFileError(self.path, problem, where=where, field=field)
        return ReplayFileError(
            self.path, problem, where=self.location(index), row=index + 1, field=field
        )

    def location(self, index: int) -> str:
        """How a person finds 0-based row ``index``: its row number and, in a CSV, its line."""
        row = index + 1
        # Rows are the lines after the header: the CSV reader rejects line breaks in values.
        return f"row {row} (line {row + 1})" if self.is_csv else f"row {row}"

    def batches(
        self, columns: Sequence[str] | None = None, *, from_row_group: int = 0
    ) -> Iterator[Rows]:
        """The file in canonical types; optional columns it lacks are all null.

        ``from_row_group`` (Parquet) leaves out the row groups before it; rows keep their numbers.
        """
        wanted = [c for c in self.spec.columns if columns is None or c.name in columns]
        first = self._rows_before(from_row_group)
        names = [c.name for c in wanted if c.name in self.stored]
        for raw in self._raw_batches(names, from_row_group):
            arrays = [self._convert(raw, column, first) for column in wanted]
            schema = pa.schema([(column.name, column.type) for column in wanted])
            yield Rows(first, pa.record_batch(arrays, schema=schema))
            first += raw.num_rows

    def _csv_header(self) -> tuple[str, ...]:
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as text:
                header = next(csv.reader(text), None)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ReplayFileError(self.path, f"cannot read the CSV header: {exc}") from exc
        if not header:
            raise self.error("the file is empty; the first line must name the columns")
        names = tuple(name.strip() for name in header)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise self.error(f"column named more than once: {', '.join(repeated)}")
        return names

    def _parquet_schema(self) -> tuple[str, ...]:
        try:
            names: list[str] = pq.read_schema(self.path).names
        except (OSError, pa.ArrowException) as exc:
            raise ReplayFileError(self.path, f"not a readable Parquet file: {exc}") from exc
        return tuple(names)

    def _check_columns(self) -> None:
        for column in self.spec.columns:
            if column.required and column.name not in self.stored:
                found = ", ".join(self.stored) or "none"
                raise self.error(f"required column is missing (found: {found})", None, column.name)

    def row_groups_before(self, column: str, value_ns: int) -> int:
        """How many leading Parquet row groups hold only instants of ``column`` before
        ``value_ns``, by the groups' statistics (0 for CSV or without statistics).

        Only meaningful for a file in ``column`` order, where those groups can be skipped.
        """
        if self.is_csv:
            return 0
        try:
            with pq.ParquetFile(self.path) as parquet:
                stored = parquet.schema_arrow.field(column).type
                if not pa.types.is_timestamp(stored) or stored.tz is None:
                    return 0
                ns_per_unit = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[stored.unit]
                position = parquet.schema_arrow.get_field_index(column)
                metadata = parquet.metadata
                for group in range(metadata.num_row_groups):
                    chunk = metadata.row_group(group).column(position)
                    stats = chunk.statistics
                    if chunk.physical_type != "INT64" or stats is None or not stats.has_min_max:
                        return group
                    if int(stats.max_raw) * ns_per_unit >= value_ns:
                        return group
                groups: int = metadata.num_row_groups
                return groups
        except (OSError, pa.ArrowException, KeyError):
            return 0  # the rows themselves say what is wrong

    def _rows_before(self, row_group: int) -> int:
        if row_group == 0:
            return 0
        with pq.ParquetFile(self.path) as parquet:
            metadata = parquet.metadata
            return sum(metadata.row_group(k).num_rows for k in range(row_group))

    def _raw_batches(self, names: list[str], from_row_group: int = 0) -> Iterator[pa.RecordBatch]:
        try:
            if self.is_csv:
                yield from self._csv_batches(names)
            else:
                # pre_buffer would cache every column chunk it read until the file closes, and
                # without buffer_size a whole column chunk is read at once: both grow with the
                # file. Buffered reads keep one batch (and a buffer per column) in memory.
                with pq.ParquetFile(
                    self.path, pre_buffer=False, buffer_size=PARQUET_BUFFER_BYTES
                ) as parquet:
                    groups = list(range(from_row_group, parquet.metadata.num_row_groups))
                    yield from parquet.iter_batches(
                        batch_size=self.limits.batch_rows, columns=names, row_groups=groups
                    )
        except pa.ArrowException as exc:
            raise ReplayFileError(self.path, f"cannot read the file: {exc}") from exc

    def _csv_batches(self, names: list[str]) -> Iterator[pa.RecordBatch]:
        # Every column comes in as text so that a bad value can be named with its row here,
        # instead of failing inside the CSV reader with no row number.
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            include_columns=names,
            strings_can_be_null=True,
            null_values=[""],
        )
        read = pacsv.ReadOptions(block_size=self.limits.csv_block_bytes)
        with pacsv.open_csv(self.path, read_options=read, convert_options=convert) as reader:
            yield from reader

    def _convert(self, raw: pa.RecordBatch, column: Column, first: int) -> pa.Array:
        if column.name not in self.stored:
            return pa.nulls(raw.num_rows, column.type)
        values = raw.column(column.name)
        convert = _to_rounded_int if column.rounded else _CONVERTERS[column.type]
        description = _DESCRIPTIONS[column.type]
        try:
            return convert(values)
        except _WrongTypeError:
            index = _first_value(values)
            if index is None:  # nothing stored but nulls: the null checks speak for them
                return pa.nulls(raw.num_rows, column.type)
            value = _show(values[index].as_py())
            problem = f"{value} ({values.type}) is not {description}"
            raise self.error(problem, first + index, column.name) from None
        except pa.ArrowInvalid:
            index = _first_failure(values, convert)
            problem = f"{_show(values[index].as_py())} is not {description}"
            raise self.error(problem, first + index, column.name) from None
