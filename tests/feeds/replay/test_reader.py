from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.replay import FileKind, ReadLimits, ReplayFileError
from tapescan.feeds.replay.files import SPECS, FileSource
from tapescan.feeds.replay.reader import (
    MINUTE_ROW_SCHEMA,
    MinuteBarReader,
    minute_groups,
    read_daily_bars,
    read_reference,
)
from tapescan.feeds.sim.generator import DAILY_BAR_SCHEMA
from tests.feeds.replay.conftest import SimulatedFiles
from tests.feeds.replay.helpers import DAY, FORMATS, PREVIOUS_DAY, SMALL, at, minute_bars, write


def canonical(source: FileSource) -> pa.Table:
    return pa.Table.from_batches([rows.batch for rows in source.batches()], source.spec.schema)


def test_csv_files_read_back_exactly_what_the_parquet_files_hold(
    simulated: SimulatedFiles,
) -> None:
    for kind in FileKind:
        parquet = canonical(FileSource(getattr(simulated.parquet, _field(kind)), kind))
        csv = canonical(FileSource(getattr(simulated.csv, _field(kind)), kind))
        for name in parquet.column_names:
            left, right = parquet.column(name), csv.column(name)
            if pa.types.is_floating(left.type):
                # Bit for bit, not approximately: the CSV writer prints shortest round-trip text.
                assert np.array_equal(left.to_numpy(), right.to_numpy()), (kind, name)
            else:
                assert left.equals(right), (kind, name)


def _field(kind: FileKind) -> str:
    return {
        FileKind.MINUTE_BARS: "minute_bars",
        FileKind.DAILY_BARS: "daily_bars",
        FileKind.REFERENCE: "reference",
    }[kind]


def sorted_rows(
    path: Path,
    limits: ReadLimits,
    from_ns: int | None = None,
    end_ns: int | None = None,
    *,
    time_ordered: bool = False,
) -> pa.Table:
    with MinuteBarReader(
        path, from_ns=from_ns, end_ns=end_ns, time_ordered=time_ordered, limits=limits
    ) as reader:
        return pa.Table.from_batches(list(reader.batches()), MINUTE_ROW_SCHEMA)


@pytest.mark.parametrize("file_format", FORMATS)
def test_a_shuffled_file_is_read_in_time_then_symbol_order(
    tmp_path: Path, simulated: SimulatedFiles, file_format: str
) -> None:
    bars = pq.read_table(simulated.parquet.minute_bars)
    shuffled = bars.take(np.random.default_rng(5).permutation(bars.num_rows))
    path = write(tmp_path / f"minute_bars.{file_format}", shuffled)
    rows = sorted_rows(path, ReadLimits(batch_rows=997, csv_block_bytes=64_000))
    assert rows.num_rows == bars.num_rows
    start = rows.column("start_ns").to_numpy()
    symbol = np.array(rows.column("symbol").to_pylist())
    assert np.all(
        (start[1:] > start[:-1]) | ((start[1:] == start[:-1]) & (symbol[1:] > symbol[:-1]))
    )
    expected = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    assert np.array_equal(start, pc.cast(expected.column("ts"), pa.int64()).to_numpy() * 1000)
    for name in ("symbol", "open", "high", "low", "close", "volume", "vwap", "trades"):
        assert rows.column(name).equals(expected.column(name)), name


def test_the_window_keeps_bars_from_the_start_that_end_by_the_end(tmp_path: Path) -> None:
    path = write(tmp_path / "m.parquet", minute_bars(["AAA", "BBB"], [at(9, m) for m in range(6)]))
    rows = sorted_rows(path, SMALL, from_ns=at(9, 2), end_ns=at(9, 5))
    starts = sorted(set(rows.column("start_ns").to_pylist()))
    assert starts == [at(9, 2), at(9, 3), at(9, 4)]


@pytest.mark.parametrize("time_ordered", [False, True])
def test_missing_vwap_and_trades_default_to_typical_price_and_zero(
    tmp_path: Path, time_ordered: bool
) -> None:
    table = minute_bars(["AAA", "BBB"], [at(9, 0)])
    vwap = pa.array([None, 7.5], pa.float64())
    for file_format, bars in (("csv", table), ("parquet", table.append_column("vwap", vwap))):
        path = write(tmp_path / f"m.{file_format}", bars)
        rows = sorted_rows(path, SMALL, time_ordered=time_ordered)
        prices = [rows.column(n).to_numpy() for n in ("open", "high", "low", "close")]
        typical = (prices[0] + prices[1] + prices[2] + prices[3]) / 4
        expected = typical if file_format == "csv" else np.array([typical[0], 7.5])
        assert np.array_equal(rows.column("vwap").to_numpy(), expected)
        assert rows.column("trades").to_pylist() == [0, 0]


def test_minutes_that_span_fetched_batches_are_regrouped_whole(tmp_path: Path) -> None:
    symbols = [f"S{k:02d}" for k in range(7)]
    path = write(tmp_path / "m.parquet", minute_bars(symbols, [at(9, m) for m in range(5)]))
    with MinuteBarReader(path, limits=ReadLimits(batch_rows=3)) as reader:
        groups = list(minute_groups(reader.batches()))
    assert [g.num_rows for g in groups] == [7] * 5
    assert [g.column("start_ns")[0].as_py() for g in groups] == [at(9, m) for m in range(5)]
    for group in groups:
        assert len(set(group.column("start_ns").to_pylist())) == 1


@pytest.mark.parametrize("file_format", FORMATS)
def test_daily_bars_and_reference_read_whole_in_the_replay_schema(
    simulated: SimulatedFiles, file_format: str
) -> None:
    files = simulated.files(file_format)
    daily = read_daily_bars(files.daily_bars)
    assert daily.schema == DAILY_BAR_SCHEMA
    assert set(daily.column("date").to_pylist()) >= {PREVIOUS_DAY, DAY}
    some = read_daily_bars(files.daily_bars, [DAY])
    assert set(some.column("date").to_pylist()) == {DAY}
    assert files.reference is not None
    reference = read_reference(files.reference)
    assert reference.schema == SPECS[FileKind.REFERENCE].schema
    assert reference.schema == simulated.market.reference_table().schema
    assert reference.column("symbol").to_pylist() == list(simulated.market.universe.symbols)


def _minutes(rows: pa.Table) -> list[tuple[int, list[tuple[object, ...]]]]:
    """Each minute's bars, the minute's rows sorted by symbol: what the feed makes of them."""
    out = []
    for group in minute_groups(iter(rows.to_batches())):
        columns = [group.column(n).to_pylist() for n in MINUTE_ROW_SCHEMA.names]
        bars = sorted(zip(*columns, strict=True))
        out.append((group.column("start_ns")[0].as_py(), bars))
    return out


@pytest.mark.parametrize("file_format", FORMATS)
def test_a_file_in_time_order_streams_straight_through_with_the_same_bars(
    tmp_path: Path, simulated: SimulatedFiles, file_format: str
) -> None:
    bars = pq.read_table(simulated.parquet.minute_bars)
    path = tmp_path / f"minute_bars.{file_format}"
    if file_format == "parquet":
        pq.write_table(bars, path, row_group_size=2_000)  # many groups to skip
    else:
        write(path, bars)
    limits = ReadLimits(batch_rows=997, csv_block_bytes=64_000)
    windows = [
        (None, None),
        (at(4, 0), None),
        (at(9, 30), at(10, 15)),
        (None, at(9, 0, PREVIOUS_DAY)),
    ]
    for window in windows:
        sorted_by_duckdb = sorted_rows(path, limits, *window)
        streamed = sorted_rows(path, limits, *window, time_ordered=True)
        assert streamed.num_rows == sorted_by_duckdb.num_rows > 0, window
        assert _minutes(streamed) == _minutes(sorted_by_duckdb), window


def test_parquet_row_groups_before_an_instant_are_found_by_their_statistics(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(minute_bars(["AAA", "BBB"], [at(9, m) for m in range(6)]), path, 4)
    source = FileSource(path, FileKind.MINUTE_BARS)
    # Row groups of 4 rows: 09:00 09:00 09:01 09:01 | 09:02 09:02 09:03 09:03 | 09:04 ...
    assert source.row_groups_before("ts", at(9, 0)) == 0
    assert source.row_groups_before("ts", at(9, 2)) == 1
    assert source.row_groups_before("ts", at(9, 3) + 1) == 2
    assert source.row_groups_before("ts", at(11, 0)) == 3
    skipped = list(source.batches(from_row_group=1))
    assert skipped[0].first == 4  # rows keep their numbers for error messages
    assert skipped[0].batch.column("ts")[0].value == at(9, 2)
    csv = write(tmp_path / "m.csv", minute_bars(["AAA"], [at(9, 0)]))
    assert FileSource(csv, FileKind.MINUTE_BARS).row_groups_before("ts", at(11, 0)) == 0


def test_a_duckdb_failure_while_sorting_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "m.parquet", minute_bars(["AAA", "BBB"], [at(9, 1), at(9, 0)]))
    with (
        pytest.raises(ReplayFileError) as caught,
        MinuteBarReader(path, limits=ReadLimits(memory_limit="no such size")) as reader,
    ):
        list(reader.batches())
    message = str(caught.value)
    assert message.startswith("m.parquet: sorting the minute bars failed: ")
    assert "\n" not in message
