from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.base import FeedError
from tapescan.feeds.replay import (
    FileKind,
    ReadLimits,
    ReplayFileError,
    ReplayFiles,
    validate_file,
    validate_files,
)
from tapescan.feeds.replay.reader import read_reference
from tests.feeds.replay.conftest import SYMBOLS, SimulatedFiles
from tests.feeds.replay.helpers import (
    DAY,
    FORMATS,
    PREVIOUS_DAY,
    SMALL,
    at,
    daily_bars,
    minute_bars,
    reference_table,
    write,
)

Mutation = Callable[[pa.Table], pa.Table]


def valid_minutes() -> pa.Table:
    """12 rows: AAA, BBB, CCC at 09:30-09:33; row index k is file row k + 1."""
    return minute_bars(["AAA", "BBB", "CCC"], [at(9, 30 + m) for m in range(4)])


def valid_daily() -> pa.Table:
    """6 rows: AAA, BBB on three dates."""
    return daily_bars(["AAA", "BBB"], [dt.date(2025, 3, d) for d in (5, 6, 7)])


def valid_reference() -> pa.Table:
    return reference_table(["AAA", "BBB", "CCC"])


def setting(index: int, name: str, value: object) -> Mutation:
    """The table with one value replaced; text turns the column into text, as in a bad file."""

    def mutate(table: pa.Table) -> pa.Table:
        column = table.column(name)
        if isinstance(value, str) and not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        values = column.to_pylist()
        values[index] = value
        array = pa.array(values, column.type)
        return table.set_column(table.schema.get_field_index(name), name, array)

    return mutate


def dropping(name: str) -> Mutation:
    def mutate(table: pa.Table) -> pa.Table:
        return table.drop_columns([name])

    return mutate


def adding(name: str, values: Sequence[object]) -> Mutation:
    def mutate(table: pa.Table) -> pa.Table:
        return table.append_column(name, pa.array(values))

    return mutate


def copying_key(source: int, target: int, name: str) -> Mutation:
    """Row ``target`` gets row ``source``'s value of ``name``, making their keys equal."""

    def mutate(table: pa.Table) -> pa.Table:
        return setting(target, name, table.column(name)[source].as_py())(table)

    return mutate


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Mutation
    row: int | None  # 1-based file row; None for the header or schema
    field: str
    says: str


MINUTE_CASES = [
    Case("missing column", dropping("high"), None, "high", "required column is missing"),
    Case("text in a float", setting(3, "open", "abc"), 4, "open", "'abc' is not a number"),
    Case("text ts", setting(5, "ts", "yesterday"), 6, "ts", "'yesterday' is not a timestamp"),
    Case(
        "ts without offset",
        setting(5, "ts", "2025-03-10 13:31:00"),
        6,
        "ts",
        "is not a timestamp with a UTC offset",
    ),
    Case("text in an int", setting(2, "volume", "many"), 3, "volume", "is not a whole number"),
    Case("fraction in an int", setting(2, "volume", "1.5"), 3, "volume", "is not a whole number"),
    Case("duplicate", copying_key(1, 7, "ts"), 8, "ts", "duplicate of row 2"),
    Case("negative volume", setting(4, "volume", -5), 5, "volume", "volume -5 is negative"),
    Case("high below low", setting(6, "high", 9.0), 7, "high", "high 9.0 is below low 9.5"),
    Case("nan price", setting(8, "close", math.nan), 9, "close", "not a finite number"),
    Case("infinite price", setting(8, "low", math.inf), 9, "low", "not a finite number"),
    Case("zero price", setting(9, "open", 0.0), 10, "open", "open 0.0 is not a positive price"),
    Case("negative price", setting(9, "high", -1.0), 10, "high", "is not a positive price"),
    Case("open outside", setting(10, "open", 50.0), 11, "open", "open 50.0 is outside"),
    Case("close outside", setting(11, "close", 1.0), 12, "close", "close 1.0 is outside"),
    Case("null symbol", setting(2, "symbol", None), 3, "symbol", "symbol is missing"),
    Case(
        "ts between minutes",
        setting(3, "ts", dt.datetime(2025, 3, 10, 13, 31, 30, tzinfo=dt.UTC)),
        4,
        "ts",
        "is not on a whole minute",
    ),
    Case(
        "ts beyond the calendar",
        setting(3, "ts", dt.datetime(2040, 1, 2, 15, 0, tzinfo=dt.UTC)),
        4,
        "ts",
        "outside the market calendar",
    ),
    Case("null price", setting(7, "open", None), 8, "open", "open is missing"),
    Case("negative trades", adding("trades", [1] * 5 + [-1] + [1] * 6), 6, "trades", "is negative"),
]

DAILY_CASES = [
    Case("missing column", dropping("close"), None, "close", "required column is missing"),
    Case("text date", setting(3, "date", "2025-13-45"), 4, "date", "'2025-13-45' is not a date"),
    Case("text in a float", setting(0, "low", "low"), 1, "low", "'low' is not a number"),
    Case("duplicate", copying_key(1, 3, "date"), 4, "date", "duplicate of row 2"),
    Case("negative volume", setting(5, "volume", -1), 6, "volume", "volume -1 is negative"),
    Case("high below low", setting(2, "high", 8.0), 3, "high", "high 8.0 is below low 9.0"),
    Case("nan price", setting(4, "open", math.nan), 5, "open", "not a finite number"),
    Case("null symbol", setting(1, "symbol", None), 2, "symbol", "symbol is missing"),
]

REFERENCE_CASES = [
    Case("missing column", dropping("symbol"), None, "symbol", "required column is missing"),
    Case("duplicate", setting(2, "symbol", "AAA"), 3, "symbol", "duplicate of row 1"),
    Case("null symbol", setting(1, "symbol", None), 2, "symbol", "symbol is missing"),
    Case("negative shares", setting(1, "float_shares", -10), 2, "float_shares", "is negative"),
]


def expected_prefix(path: Path, case: Case) -> str:
    csv = path.suffix == ".csv"
    if case.row is None:
        where = "header (line 1)" if csv else "schema"
    else:
        where = f"row {case.row} (line {case.row + 1})" if csv else f"row {case.row}"
    return f"{path.name}: {where}, field '{case.field}': "


def assert_rejected(path: Path, kind: FileKind, case: Case, limits: ReadLimits = SMALL) -> None:
    with pytest.raises(ReplayFileError) as caught:
        validate_file(path, kind, limits=limits)
    message = str(caught.value)
    assert message.startswith(expected_prefix(path, case)), message
    assert case.says in message
    assert caught.value.row == case.row
    assert caught.value.field == case.field


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("case", MINUTE_CASES, ids=lambda case: case.id)
def test_a_bad_minute_bar_file_is_rejected_naming_file_row_and_field(
    tmp_path: Path, file_format: str, case: Case
) -> None:
    path = write(tmp_path / f"minute_bars.{file_format}", case.mutate(valid_minutes()))
    assert_rejected(path, FileKind.MINUTE_BARS, case)


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("case", DAILY_CASES, ids=lambda case: case.id)
def test_a_bad_daily_bar_file_is_rejected_naming_file_row_and_field(
    tmp_path: Path, file_format: str, case: Case
) -> None:
    path = write(tmp_path / f"daily_bars.{file_format}", case.mutate(valid_daily()))
    assert_rejected(path, FileKind.DAILY_BARS, case)


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda case: case.id)
def test_a_bad_reference_file_is_rejected_naming_file_row_and_field(
    tmp_path: Path, file_format: str, case: Case
) -> None:
    path = write(tmp_path / f"reference.{file_format}", case.mutate(valid_reference()))
    assert_rejected(path, FileKind.REFERENCE, case)


@pytest.mark.parametrize("file_format", FORMATS)
def test_rows_are_numbered_the_same_whatever_the_batch_size(
    tmp_path: Path, file_format: str
) -> None:
    case = Case("late", setting(10, "volume", -1), 11, "volume", "volume -1 is negative")
    path = write(tmp_path / f"minute_bars.{file_format}", case.mutate(valid_minutes()))
    for limits in (SMALL, ReadLimits(batch_rows=5, csv_block_bytes=300), ReadLimits()):
        assert_rejected(path, FileKind.MINUTE_BARS, case, limits)


@pytest.mark.parametrize("file_format", FORMATS)
def test_the_first_problem_in_file_order_is_reported(tmp_path: Path, file_format: str) -> None:
    late_value = setting(9, "volume", -1)
    early_value = setting(2, "high", 1.0)
    path = write(tmp_path / f"a.{file_format}", late_value(early_value(valid_minutes())))
    with pytest.raises(ReplayFileError, match="field 'high'"):
        validate_file(path, FileKind.MINUTE_BARS, limits=SMALL)
    early_duplicate = copying_key(0, 3, "ts")  # row 4 repeats AAA at 09:30
    path = write(tmp_path / f"b.{file_format}", late_value(early_duplicate(valid_minutes())))
    with pytest.raises(ReplayFileError, match="duplicate of row 1"):
        validate_file(path, FileKind.MINUTE_BARS, limits=SMALL)
    late_duplicate = copying_key(0, 10, "ts")
    path = write(tmp_path / f"c.{file_format}", late_duplicate(early_value(valid_minutes())))
    with pytest.raises(ReplayFileError, match="field 'high'"):
        validate_file(path, FileKind.MINUTE_BARS, limits=SMALL)


def test_a_parquet_timestamp_without_time_zone_is_rejected_at_its_first_row(
    tmp_path: Path,
) -> None:
    table = valid_minutes()
    naive = pc.cast(table.column("ts"), pa.timestamp("us"))
    path = write(tmp_path / "minute_bars.parquet", table.set_column(1, "ts", naive))
    with pytest.raises(ReplayFileError, match=r"^minute_bars.parquet: row 1, field 'ts': "):
        validate_file(path, FileKind.MINUTE_BARS)


def test_a_parquet_column_of_the_wrong_type_is_rejected_at_its_first_value(
    tmp_path: Path,
) -> None:
    table = valid_minutes()
    as_numbers = pc.cast(table.column("ts"), pa.int64())
    path = write(tmp_path / "minute_bars.parquet", table.set_column(1, "ts", as_numbers))
    with pytest.raises(ReplayFileError, match=r"row 1, field 'ts': \d+ \(int64\) is not a time"):
        validate_file(path, FileKind.MINUTE_BARS)


def test_csv_timestamps_may_use_z_an_offset_or_the_pyarrow_writer_form(tmp_path: Path) -> None:
    path = tmp_path / "minute_bars.csv"
    path.write_text(
        "symbol,ts,open,high,low,close,volume\n"
        "AAA,2025-03-10T13:30:00Z,10,11,9,10,5\n"
        "AAA,2025-03-10T09:31:00-04:00,10,11,9,10,5\n"
        "AAA,2025-03-10 13:32:00.000000Z,10,11,9,10,5\n"
        "AAA,2025-03-10T14:33:00+01:00,10,11,9,10,5\n"
    )
    summary = validate_file(path, FileKind.MINUTE_BARS)
    assert summary.rows == 4
    assert summary.sessions == (DAY,)


def test_a_file_that_is_neither_parquet_nor_csv_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "minute_bars.txt"
    path.write_text("symbol,ts\n")
    with pytest.raises(ReplayFileError, match=r"^minute_bars.txt: unsupported file type"):
        validate_file(path, FileKind.MINUTE_BARS)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("minute_bars.csv", b"", "the file is empty"),
        ("minute_bars.csv", b"symbol,ts,open,high,low,close,volume\n", "no minute bars"),
        ("minute_bars.csv", b"symbol,symbol,ts\n", "column named more than once"),
        ("minute_bars.parquet", b"not parquet at all", "not a readable Parquet file"),
        (
            "minute_bars.csv",
            b"symbol,ts,open,high,low,close,volume\nAAA,2025-03-10T13:30:00Z,10\n",
            "cannot read the file",
        ),
        ("minute_bars.csv", b"\xff\xfe\x00garbage", "cannot read the CSV header"),
    ],
)
def test_an_unreadable_file_is_rejected_without_crashing(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReplayFileError, match=says) as caught:
        validate_file(path, FileKind.MINUTE_BARS)
    assert str(caught.value).startswith(name)


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileError, match="not found"):
        validate_file(tmp_path / "nowhere.parquet", FileKind.DAILY_BARS)


def test_a_replay_file_error_is_a_feed_error() -> None:
    assert issubclass(ReplayFileError, FeedError)


@pytest.mark.parametrize("file_format", FORMATS)
def test_simulated_files_pass_and_are_summarised(
    simulated: SimulatedFiles, file_format: str
) -> None:
    files = simulated.files(file_format)
    summary = validate_files(files, limits=ReadLimits(batch_rows=1_000, csv_block_bytes=50_000))
    minutes = pq.read_table(simulated.parquet.minute_bars)
    assert summary.minute_bars.rows == minutes.num_rows
    assert summary.minute_bars.sessions == (PREVIOUS_DAY, DAY)
    assert set(summary.minute_bars.symbols) == set(minutes.column("symbol").to_pylist())
    assert summary.reference is not None
    assert summary.reference.symbols == simulated.market.universe.symbols
    assert summary.reference.rows == SYMBOLS
    assert summary.daily_bars.sessions[-2:] == (PREVIOUS_DAY, DAY)
    assert len(summary.daily_bars.sessions) == 42  # 40 modelled sessions of history, then two


def test_validate_files_names_the_bad_one(tmp_path: Path, simulated: SimulatedFiles) -> None:
    daily = write(tmp_path / "daily_bars.csv", setting(1, "volume", -3)(valid_daily()))
    files = ReplayFiles(simulated.csv.minute_bars, daily, simulated.csv.reference)
    with pytest.raises(ReplayFileError, match=r"^daily_bars.csv: row 2 \(line 3\), field 'vol"):
        validate_files(files)


def test_optional_columns_may_hold_nulls(tmp_path: Path) -> None:
    table = valid_minutes()
    vwap = pa.array([None, 10.1] + [None] * 10, pa.float64())
    trades = pa.array([3] + [None] * 11, pa.int64())
    table = table.append_column("vwap", vwap).append_column("trades", trades)
    for file_format in FORMATS:
        path = write(tmp_path / f"minute_bars.{file_format}", table)
        assert validate_file(path, FileKind.MINUTE_BARS).rows == 12


def test_whole_number_floats_are_accepted_as_volume(tmp_path: Path) -> None:
    table = valid_minutes()
    volume = pc.cast(table.column("volume"), pa.float64())
    path = write(tmp_path / "minute_bars.parquet", table.set_column(6, "volume", volume))
    assert validate_file(path, FileKind.MINUTE_BARS).rows == 12
    fraction = pa.array(np.where(np.arange(12) == 5, 0.5, 1.0))
    path = write(tmp_path / "minute_bars.parquet", table.set_column(6, "volume", fraction))
    with pytest.raises(ReplayFileError, match=r"row 6, field 'volume': 0.5 is not a whole"):
        validate_file(path, FileKind.MINUTE_BARS)


def test_daily_dates_stored_as_midnight_timestamps_are_accepted(tmp_path: Path) -> None:
    table = valid_daily()
    midnight = pc.cast(table.column("date"), pa.timestamp("ms"))
    path = write(tmp_path / "daily_bars.parquet", table.set_column(1, "date", midnight))
    assert validate_file(path, FileKind.DAILY_BARS).sessions == tuple(
        dt.date(2025, 3, d) for d in (5, 6, 7)
    )
    noon = pc.add(midnight, pa.scalar(dt.timedelta(hours=12), pa.duration("ms")))
    shifted = pa.array(
        [m if k != 4 else n for k, (m, n) in enumerate(zip(midnight, noon, strict=True))]
    )
    path = write(tmp_path / "daily_bars.parquet", table.set_column(1, "date", shifted))
    with pytest.raises(ReplayFileError, match=r"row 5, field 'date': .* is not a date"):
        validate_file(path, FileKind.DAILY_BARS)


@pytest.mark.parametrize("file_format", FORMATS)
def test_fractional_share_counts_in_a_reference_file_are_rounded(
    tmp_path: Path, file_format: str
) -> None:
    table = valid_reference().append_column(
        "shares_outstanding", pa.array([23738865.8, 1000.5, 7.0])
    )
    table = table.set_column(2, "float_shares", pa.array([1.4, 2.5, 3.5]))
    path = write(tmp_path / f"reference.{file_format}", table)
    assert validate_file(path, FileKind.REFERENCE).rows == 3
    read = read_reference(path)
    assert read.column("shares_outstanding").to_pylist() == [23738866, 1000, 7]
    assert read.column("float_shares").to_pylist() == [1, 2, 4]  # halves to even
    for bad, says in (
        (math.nan, "'?nan'? is not a whole number"),
        (-3.2, "shares_outstanding -3 is negative"),
    ):
        shares = pa.array([5.0, bad, 7.0])
        path = write(
            tmp_path / f"bad.{file_format}", table.set_column(3, "shares_outstanding", shares)
        )
        with pytest.raises(ReplayFileError, match=f"row 2.*field 'shares_outstanding': {says}"):
            validate_file(path, FileKind.REFERENCE)
