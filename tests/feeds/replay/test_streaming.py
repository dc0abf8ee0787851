"""Validation and reading stream files of any size: memory does not grow with the rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.replay import FileKind, ReadLimits, ReplayFileError, validate_file
from tapescan.feeds.replay.files import FileSource
from tapescan.feeds.replay.seen import BLOCK_BYTES, BLOCK_SPAN, SeenKeys
from tests.feeds.replay.helpers import DAY, PREVIOUS_DAY, at, bar, bars_table, minute_bars, write


def test_seen_keys_find_exactly_the_keys_a_set_finds() -> None:
    rng = np.random.default_rng(11)
    seen, reference = SeenKeys(), set()
    names = np.array([f"S{k}" for k in range(3_000)])  # more symbols than a block starts with
    for _ in range(40):
        symbols = names[rng.integers(0, len(names), 500)]
        values = rng.integers(-3 * BLOCK_SPAN, 5 * BLOCK_SPAN, 500)  # several blocks, negatives
        keys = list(zip(symbols.tolist(), values.tolist(), strict=True))
        expected = None
        batch_keys: set[tuple[str, int]] = set()
        for index, key in enumerate(keys):
            if key in reference or key in batch_keys:
                expected = index
                break
            batch_keys.add(key)
        found = seen.add(seen.symbol_ids(pa.array(symbols)), values.astype(np.int64))
        assert found == expected
        if found is None:
            reference |= batch_keys
        else:  # nothing of a batch with a repeat is kept; go on with its keys before the repeat
            head = slice(0, found)
            assert seen.add(seen.symbol_ids(pa.array(symbols[head])), values[head]) is None
            reference.update(keys[head])


def test_seen_keys_take_a_bit_per_symbol_and_minute_of_each_day_whatever_the_rows() -> None:
    seen = SeenKeys()
    symbols = pa.array([f"S{k}" for k in range(2_000)])
    ids = seen.symbol_ids(symbols)
    minute = at(9, 30) // 60_000_000_000
    for step in range(300):  # 600,000 keys over one UTC day
        assert seen.add(ids, np.full(len(ids), minute + step, dtype=np.int64)) is None
    assert seen.nbytes == 2_048 * BLOCK_BYTES  # 2,000 symbols rounded up to 1,024s: 369 KB


def test_validating_minute_bars_does_not_need_duckdb(tmp_path: Path) -> None:
    """Validation used to group every key in DuckDB, which ran out of memory at full size."""
    path = write(tmp_path / "m.parquet", minute_bars(["AAA", "BBB"], [at(9, m) for m in range(9)]))
    unusable = ReadLimits(batch_rows=5, memory_limit="no such size")
    assert validate_file(path, FileKind.MINUTE_BARS, limits=unusable).rows == 18


def test_a_key_repeated_far_apart_in_a_file_in_symbol_order_is_found(tmp_path: Path) -> None:
    symbols = [f"S{k:03d}" for k in range(40)]
    starts = [at(h, m, day) for day in (PREVIOUS_DAY, DAY) for h in (4, 12, 19) for m in (0, 59)]
    rows = [bar(s, t, 10.0) for s in symbols for t in starts]
    rows.insert(len(rows) - 3, bar("S001", starts[5], 11.0))  # S001's last bar of the first day
    path = write(tmp_path / "m.csv", bars_table(rows))
    with pytest.raises(ReplayFileError) as caught:
        validate_file(path, FileKind.MINUTE_BARS, limits=ReadLimits(batch_rows=7))
    assert caught.value.row == len(rows) - 3
    assert "duplicate of row 18 (line 19): both have symbol 'S001' and ts 2025-03-08T00:59:00Z" in (
        str(caught.value)
    )


def test_a_key_three_rows_share_is_reported_at_its_second_row_and_counted(
    tmp_path: Path,
) -> None:
    rows = [bar(s, at(9, m)) for m in range(3) for s in ("AAA", "BBB")]
    rows[3] = bar("AAA", at(9, 0))  # row 4 repeats row 1
    rows[5] = bar("AAA", at(9, 0))  # and so does row 6
    path = write(tmp_path / "m.parquet", bars_table(rows))
    with pytest.raises(ReplayFileError) as caught:
        validate_file(path, FileKind.MINUTE_BARS)
    assert caught.value.row == 4
    assert str(caught.value).endswith(
        "duplicate of row 1: both have symbol 'AAA' and ts 2025-03-10T13:00:00Z (3 rows have them)"
    )


def test_validation_notes_whether_minute_bars_are_in_time_order(tmp_path: Path) -> None:
    ordered = minute_bars(["AAA", "BBB"], [at(9, m) for m in range(6)])
    for batch_rows in (3, 4, 100):  # a step back inside a batch and between two
        limits = ReadLimits(batch_rows=batch_rows)
        path = write(tmp_path / "in_order.parquet", ordered)
        assert validate_file(path, FileKind.MINUTE_BARS, limits=limits).time_ordered
        swapped = ordered.take([0, 1, 2, 3, 6, 7, 4, 5, 8, 9, 10, 11])
        path = write(tmp_path / "swapped.parquet", swapped)
        assert not validate_file(path, FileKind.MINUTE_BARS, limits=limits).time_ordered


def test_streaming_a_parquet_file_holds_one_batch_not_the_file(tmp_path: Path) -> None:
    """pre_buffer kept every column chunk read until the file closed: 1 MB more per batch."""
    rng = np.random.default_rng(3)
    rows = 400_000
    table = pa.table(
        {
            "symbol": pa.array(np.char.add("S", (np.arange(rows) % 997).astype(str))),
            "ts": pa.array(
                np.repeat(np.arange(rows // 997 + 1), 997)[:rows] * 60_000_000 + at(4, 0) // 1000,
                pa.timestamp("us", tz="UTC"),
            ),
            **{name: pa.array(rng.uniform(10, 11, rows)) for name in ("open", "high", "low")},
            "close": pa.array(rng.uniform(10, 11, rows)),
            "volume": pa.array(rng.integers(0, 10**6, rows)),
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=4_000)
    source = FileSource(path, FileKind.MINUTE_BARS, ReadLimits(batch_rows=4_000))
    start = pa.total_allocated_bytes()
    most = 0
    for rows_read in source.batches():
        most = max(most, pa.total_allocated_bytes() - start)
        del rows_read
    assert most < 8 << 20, most  # one batch is ~0.3 MB; the compressed file is ~20 MB


def test_dates_before_1970_are_keys_like_any_other(tmp_path: Path) -> None:
    table = pa.table(
        {
            "symbol": ["AAA", "AAA", "AAA"],
            "date": pa.array([dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(1969, 12, 31)]),
            "open": [1.0] * 3,
            "high": [1.0] * 3,
            "low": [1.0] * 3,
            "close": [1.0] * 3,
            "volume": [1] * 3,
        }
    )
    path = write(tmp_path / "d.parquet", table)
    with pytest.raises(ReplayFileError, match="row 3, field 'date': duplicate of row 1"):
        validate_file(path, FileKind.DAILY_BARS)
