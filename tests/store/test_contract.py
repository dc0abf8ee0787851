"""The contract every store backend keeps; each test runs on DuckDB and on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from tapescan.store.base import Store, StoreError
from tapescan.store.migrations import LATEST_VERSION
from tapescan.store.postgres import PostgresStore
from tapescan.store.tables import DAILY_BARS, MINUTE_BARS, REPLACES, SCAN_EVENTS, TABLES

DAY = dt.date(2026, 11, 24)
UTC = dt.UTC


def minute_bars(session: dt.date, symbols: list[str], minutes: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = dt.datetime.combine(session, dt.time(14, 30), UTC)
    rows = [(s, start + dt.timedelta(minutes=m)) for m in range(minutes) for s in symbols]
    n = len(rows)
    low = rng.uniform(1, 500, n)
    # awkward doubles on purpose: they must come back bit for bit
    low[0] = 0.1 + 0.2
    return pa.table(
        {
            "session": pa.array([session] * n, pa.date32()),
            "symbol": [r[0] for r in rows],
            "ts": pa.array([r[1] for r in rows], MINUTE_BARS.schema.field("ts").type),
            "open": low * 1.01,
            "high": low * 1.03,
            "low": low,
            "close": low * 1.02,
            "volume": rng.integers(0, 10**9, n),
            "vwap": pa.array([None if i % 7 == 0 else v for i, v in enumerate(low * 1.015)]),
            "trades": pa.array([None if i % 5 == 0 else i for i in range(n)], pa.int64()),
        }
    )


def test_migrations_apply_once_and_match_the_table_specs(store: Store) -> None:
    assert store.schema_version() == LATEST_VERSION
    assert store.migrate() == []  # nothing left to apply
    schema = store.schema if isinstance(store, PostgresStore) else "main"
    for spec in TABLES.values():
        found = store.read(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, spec.name],
            pa.schema([("column_name", pa.string())]),
        )
        assert tuple(found.column("column_name").to_pylist()) == spec.columns, spec.name


def test_minute_bars_round_trip_exactly(store: Store) -> None:
    bars = minute_bars(DAY, ["AAPL", "TSLA", "A"], 30)
    store.write("minute_bars", bars)
    back = store.export_session("minute_bars", DAY)
    expected = bars.sort_by(
        [("session", "ascending"), ("symbol", "ascending"), ("ts", "ascending")]
    )
    assert back.schema == MINUTE_BARS.schema
    assert back.equals(expected)
    assert store.count("minute_bars") == bars.num_rows


def test_batched_reads_hand_out_every_row_once_in_the_given_schema(store: Store) -> None:
    bars = minute_bars(DAY, [f"S{i:04d}" for i in range(300)], 12)  # 3,600 rows: several batches
    store.write("minute_bars", bars)
    batches: list[pa.RecordBatch] = []
    sql = f"SELECT {', '.join(MINUTE_BARS.columns)} FROM minute_bars WHERE session = %s"
    store.read_batches(sql, [DAY], MINUTE_BARS.schema, batches.append)
    assert len(batches) > 1
    assert all(batch.schema == MINUTE_BARS.schema for batch in batches)
    back = pa.Table.from_batches(batches).sort_by([("symbol", "ascending"), ("ts", "ascending")])
    assert back.equals(bars.sort_by([("symbol", "ascending"), ("ts", "ascending")]))


def test_reads_take_parameters_and_return_the_given_schema(store: Store) -> None:
    store.write("minute_bars", minute_bars(DAY, ["AAPL", "TSLA"], 10))
    since = dt.datetime.combine(DAY, dt.time(14, 35), UTC)
    found = store.read(
        "SELECT ts, close FROM minute_bars WHERE symbol = %s AND ts >= %s ORDER BY ts",
        ["TSLA", since],
        pa.schema([("ts", MINUTE_BARS.schema.field("ts").type), ("close", pa.float64())]),
    )
    assert found.num_rows == 5
    assert found.column("ts")[0].as_py() == since


def test_binary_payloads_round_trip(store: Store) -> None:
    payloads = [bytes(range(256)), b"", b"\x00\\x00'\"\n", bytes(5000)]
    events = pa.table(
        {
            "session": pa.array([DAY] * 4, pa.date32()),
            "scan": ["gappers"] * 4,
            "seq": [1, 2, 3, 3],
            "asof_ns": [10, 20, 30, 30],
            "keyframe": [False, False, False, True],
            "payload": pa.array(payloads, pa.binary()),
        }
    )
    store.write("scan_events", events)
    back = store.export_session("scan_events", DAY)
    assert back.schema == SCAN_EVENTS.schema
    assert back.column("payload").to_pylist() == payloads


def test_replace_tables_keep_the_last_write_per_key(store: Store) -> None:
    def daily(close: float) -> pa.Table:
        return pa.table(
            {
                "date": pa.array([DAY], pa.date32()),
                "symbol": ["AAPL"],
                "open": [1.0],
                "high": [2.0],
                "low": [0.5],
                "close": [close],
                "volume": [100],
            }
        )

    store.write("daily_bars", daily(1.5))
    store.write("daily_bars", daily(1.75))
    back = store.export_session("daily_bars", DAY)
    assert back.schema == DAILY_BARS.schema
    assert back.column("close").to_pylist() == [1.75]


def test_minute_bars_marked_as_corrections_replace_the_bars_they_correct(store: Store) -> None:
    first = minute_bars(DAY, ["AAPL", "TSLA"], 10)
    new = first.slice(0, 16)  # minutes 0-7 written on their own
    corrected = first.slice(14, 6)  # minutes 7-9, two of them corrections of minute 7
    corrected = corrected.set_column(
        corrected.schema.get_field_index("volume"), "volume", pa.array([7, 8, 9, 10, 11, 12])
    )
    store.write("minute_bars", new.append_column(REPLACES, pa.array([False] * 16)))
    # a correction of a bar written before, and in one write a bar and then its correction
    late = first.slice(19, 1).set_column(
        first.schema.get_field_index("volume"), "volume", pa.array([99])
    )
    flags = [True, True, False, False, False, False, True]
    store.write(
        "minute_bars", pa.concat_tables([corrected, late]).append_column(REPLACES, pa.array(flags))
    )
    back = store.export_session("minute_bars", DAY)
    assert back.num_rows == first.num_rows  # each bar once
    volumes = dict(
        zip(
            zip(back.column("symbol").to_pylist(), back.column("ts").to_pylist(), strict=True),
            back.column("volume").to_pylist(),
            strict=True,
        )
    )
    keys = list(
        zip(first.column("symbol").to_pylist(), first.column("ts").to_pylist(), strict=True)
    )
    assert [volumes[k] for k in keys[14:]] == [7, 8, 9, 10, 11, 99]
    assert [volumes[k] for k in keys[:14]] == first.column("volume").to_pylist()[:14]


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_postgres_keeps_the_last_copy_of_a_bar_written_twice_unmarked(store: Store) -> None:
    """A bar written again without the corrections mark (a newer copy) wins on PostgreSQL
    whatever else its write holds (the embedded store appends such rows)."""
    first = minute_bars(DAY, ["AAPL"], 3)
    at = first.schema.get_field_index("volume")
    store.write("minute_bars", first)
    alone = first.slice(0, 1).set_column(at, "volume", pa.array([41]))
    store.write("minute_bars", alone.append_column(REPLACES, pa.array([False])))
    with_a_correction = first.slice(1, 2).set_column(at, "volume", pa.array([42, 43]))
    store.write("minute_bars", with_a_correction.append_column(REPLACES, pa.array([False, True])))
    back = store.export_session("minute_bars", DAY).sort_by("ts")
    assert back.column("volume").to_pylist() == [41, 42, 43]
    # one write holding a key twice, unmarked: the last of them (an upsert takes each once)
    twice = pa.concat_tables([first.slice(0, 1), first.slice(0, 1)])
    twice = twice.set_column(at, "volume", pa.array([50, 51]))
    store.write("minute_bars", twice)
    assert store.export_session("minute_bars", DAY).sort_by("ts").column("volume")[0].as_py() == 51


def test_sessions_drop_and_export(store: Store) -> None:
    days = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=1), DAY]
    for i, day in enumerate(days):
        store.write("minute_bars", minute_bars(day, ["AAPL"], 3 + i))
    assert store.sessions("minute_bars") == days
    store.drop_session("minute_bars", days[0])
    assert store.sessions("minute_bars") == days[1:]
    assert store.export_session("minute_bars", days[0]).num_rows == 0
    assert store.export_session("minute_bars", DAY).num_rows == 5
    assert store.count("minute_bars") == 4 + 5


def test_a_bad_batch_is_refused_whole(store: Store) -> None:
    bars = minute_bars(DAY, ["AAPL"], 3).append_column("colour", pa.array(["red"] * 3))
    with pytest.raises(ValueError, match="colour"):
        store.write("minute_bars", bars)
    assert store.count("minute_bars") == 0


def test_sizes_are_reported(store: Store) -> None:
    store.write("minute_bars", minute_bars(DAY, ["AAPL", "TSLA"], 200))
    if hasattr(store, "checkpoint"):
        store.checkpoint()
    assert store.table_bytes()["total"] > 0


def test_postgres_ignores_a_batch_written_twice(store: Store) -> None:
    if not isinstance(store, PostgresStore):
        pytest.skip("DuckDB has a single in-process writer: a failed write never half-commits")
    bars = minute_bars(DAY, ["AAPL"], 10)
    store.write("minute_bars", bars)
    store.write("minute_bars", bars)  # a retry after a lost acknowledgement
    assert store.count("minute_bars") == 10


def test_postgres_unreachable_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open PostgreSQL store"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", "x", connect_timeout_s=1)
