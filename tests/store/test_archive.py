"""The Parquet archive: layout, atomic verified writes, and reads with the store's contract."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tapescan.store.archive import Archive, ArchiveError
from tapescan.store.base import Store
from tapescan.store.tables import (
    DAILY_BARS,
    MINUTE_BARS,
    SCAN_EVENTS,
    SESSION_TABLES,
    SLOT_BYTES,
    SLOT_VOLUME,
    TABLES,
)
from tests.store.test_contract import minute_bars

FIRST = dt.date(2026, 11, 2)
SYMBOLS = ["AAPL", "TSLA", "A", "BRK.B", "NVDA"]


def sessions(n: int) -> list[dt.date]:
    return [FIRST + dt.timedelta(days=i) for i in range(n)]


def slot_volume(session: dt.date, symbols: list[str], seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    profiles = [rng.integers(0, 2**32, 192, dtype=np.uint32).tobytes() for _ in symbols]
    profiles[0] = bytes(SLOT_BYTES)  # all zero bytes
    return pa.table(
        {
            "session": pa.array([session] * len(symbols), pa.date32()),
            "symbol": symbols,
            "volume": pa.array(profiles, pa.binary()),
        }
    )


def scan_events(session: dt.date, n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    payloads = [rng.bytes(int(rng.integers(0, 600))) for _ in range(n)]
    payloads[0] = b"\x00\\x00'\"\n\r\t,"  # bytes that trip up text encodings
    payloads[1] = b""
    return pa.table(
        {
            "session": pa.array([session] * n, pa.date32()),
            "scan": ["gappers_up" if i % 3 else "halts" for i in range(n)],
            "seq": [i // 2 for i in range(n)],
            "asof_ns": [1_700_000_000_000_000_000 + i * 1_000_000 for i in range(n)],
            "keyframe": [i % 2 == 1 for i in range(n)],
            "payload": pa.array(payloads, pa.binary()),
        }
    )


def scan_entries(session: dt.date, n: int) -> pa.Table:
    return pa.table(
        {
            "session": pa.array([session] * n, pa.date32()),
            "scan": ["top_gainers"] * n,
            "seq": list(range(n)),
            "asof_ns": [1_700_000_000_000_000_000 + i for i in range(n)],
            "symbol": [SYMBOLS[i % len(SYMBOLS)] for i in range(n)],
            "entered": [i % 4 != 3 for i in range(n)],
            "rank": pa.array([None if i % 4 == 3 else 1 + i % 20 for i in range(n)], pa.int32()),
        }
    )


def daily_bars(session: dt.date, symbols: list[str]) -> pa.Table:
    n = len(symbols)
    return pa.table(
        {
            "date": pa.array([session] * n, pa.date32()),
            "symbol": symbols,
            "open": [0.1 + 0.2] * n,
            "high": [1e308] * n,
            "low": [5e-324] * n,
            "close": [1 / 3] * n,
            "volume": [10**12 + i for i in range(n)],
        }
    )


def session_data(session: dt.date, seed: int = 1, size: int = 1) -> dict[str, pa.Table]:
    """Synthetic rows of every session-keyed table (and daily bars) for one session."""
    symbols = [f"S{i:03d}" for i in range(10 * size)] + SYMBOLS
    return {
        "minute_bars": minute_bars(session, symbols, 12 * size, seed),
        "slot_volume": slot_volume(session, symbols, seed),
        "scan_events": scan_events(session, 40 * size, seed),
        "scan_entries": scan_entries(session, 30 * size),
        "daily_bars": daily_bars(session, symbols),
    }


def fields(schema: pa.Schema, *names: str) -> pa.Schema:
    return pa.schema([schema.field(name) for name in names])


def key_order(name: str, table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in TABLES[name].key])


def test_a_session_round_trips_bit_for_bit_in_the_layout(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive", zstd_level=9)
    day = FIRST
    for name, table in session_data(day).items():
        if name == "daily_bars":
            continue
        path = archive.write(name, day, table)
        assert path == tmp_path / "archive" / name / "2026-11-02.parquet"
        back = archive.read_session(name, day)
        assert back.schema == TABLES[name].schema
        assert back.equals(key_order(name, table)), name
        metadata = pq.read_metadata(path)
        assert metadata.num_rows == table.num_rows
        assert metadata.num_row_groups == 1
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == sorted(
        s.name for s in SESSION_TABLES
    )
    assert not list((tmp_path / "archive").rglob("*.tmp"))
    assert archive.sessions("minute_bars") == [day]
    assert archive.rows("minute_bars", day) == session_data(day)["minute_bars"].num_rows
    assert archive.rows("minute_bars", day + dt.timedelta(days=1)) is None


def test_archive_reads_answer_the_store_query_text_the_same(store: Store, tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive", zstd_level=3)
    days = sessions(3)
    for i, day in enumerate(days):
        for name, table in session_data(day, seed=i + 1).items():
            store.write(name, table)
            if name != "daily_bars":
                archive.write(name, day, store.export_session(name, day))
    since = dt.datetime.combine(days[1], dt.time(14, 35), dt.UTC)
    queries: list[tuple[str, list[Any], pa.Schema]] = [
        (
            "SELECT session, symbol, ts, close, vwap, trades FROM minute_bars "
            "WHERE symbol = %s AND ts >= %s ORDER BY ts",
            ["TSLA", since],
            fields(MINUTE_BARS.schema, "session", "symbol", "ts", "close", "vwap", "trades"),
        ),
        (
            "SELECT * FROM scan_events WHERE session = %s ORDER BY scan, seq, keyframe",
            [days[2]],
            SCAN_EVENTS.schema,
        ),
        (
            "SELECT * FROM slot_volume WHERE symbol IN (%s, %s) ORDER BY session, symbol",
            ["AAPL", "S003"],
            SLOT_VOLUME.schema,
        ),
        (
            "SELECT session, count(*) AS n FROM scan_entries GROUP BY session ORDER BY session",
            [],
            pa.schema([("session", pa.date32()), ("n", pa.int64())]),
        ),
    ]
    for sql, params, schema in queries:
        hot = store.read(sql, params, schema)
        cold = archive.read(sql, params, schema)
        assert hot.num_rows > 0, sql
        assert cold.schema == schema
        assert cold.equals(hot), sql


def test_a_table_with_nothing_archived_is_queryable_and_empty(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "never-written", zstd_level=1)
    for spec in TABLES.values():
        found = archive.read(f"SELECT * FROM {spec.name}", [], spec.schema)
        assert found.num_rows == 0
        assert found.schema == spec.schema
    archive.write("scan_events", FIRST, scan_events(FIRST, 5))
    events = archive.read("SELECT * FROM scan_events", [], SCAN_EVENTS.schema)
    assert events.num_rows == 5
    bars = archive.read(
        "SELECT symbol, close FROM minute_bars", [], fields(MINUTE_BARS.schema, "symbol", "close")
    )
    assert bars.num_rows == 0
    assert archive.read("SELECT * FROM daily_bars", [], DAILY_BARS.schema).num_rows == 0
    assert archive.table_bytes()["minute_bars"] == 0


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path, zstd_level=3)
    good = scan_entries(FIRST, 10)
    path = archive.write("scan_entries", FIRST, good)
    before = path.read_bytes()

    def broken(table: pa.Table, where: Any, **kwargs: Any) -> None:
        where.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(ArchiveError, match=r"cannot archive scan_entries 2026-11-02.*No space"):
        archive.write("scan_entries", FIRST, scan_entries(FIRST, 20))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_file_that_does_not_read_back_the_rows_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path, zstd_level=3)
    real = pq.read_metadata

    def short(where: Any) -> Any:
        class Short:
            num_rows = real(where).num_rows - 1
            schema = real(where).schema

        return Short()

    monkeypatch.setattr(pq, "read_metadata", short)
    with pytest.raises(ArchiveError, match="holds 9 rows, expected 10"):
        archive.write("scan_entries", FIRST, scan_entries(FIRST, 10))
    monkeypatch.undo()
    assert archive.sessions("scan_entries") == []
    assert not list(tmp_path.rglob("*.tmp"))


def test_rows_of_another_session_are_refused(tmp_path: Path) -> None:
    archive = Archive(tmp_path, zstd_level=3)
    mixed = pa.concat_tables([scan_entries(FIRST, 3), scan_entries(FIRST + dt.timedelta(1), 3)])
    with pytest.raises(ValueError, match="other sessions"):
        archive.write("scan_entries", FIRST, mixed)
    with pytest.raises(ValueError, match="not keyed by session"):
        archive.write("symbols", FIRST, mixed)


def test_an_unwritable_directory_is_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / "minute_bars").write_text("a file where the table's directory should be")
    archive = Archive(tmp_path, zstd_level=3)
    with pytest.raises(ArchiveError, match="cannot archive minute_bars 2026-11-02"):
        archive.write("minute_bars", FIRST, minute_bars(FIRST, ["AAPL"], 3))


def test_reads_from_many_threads_while_sessions_are_added(tmp_path: Path) -> None:
    archive = Archive(tmp_path, zstd_level=1)
    days = sessions(8)
    written = {day: minute_bars(day, SYMBOLS, 20, seed=i + 1) for i, day in enumerate(days)}
    for day in days[:4]:
        archive.write("minute_bars", day, written[day])
    stop = threading.Event()

    def add_the_rest() -> None:
        for day in days[4:]:
            archive.write("minute_bars", day, written[day])
        stop.set()

    def query(i: int) -> bool:
        day = days[i % 4]
        found = archive.read(
            "SELECT * FROM minute_bars WHERE session = %s", [day], MINUTE_BARS.schema
        )
        return bool(key_order("minute_bars", found).equals(key_order("minute_bars", written[day])))

    with ThreadPoolExecutor(8) as pool:
        writer = pool.submit(add_the_rest)
        results = list(pool.map(query, range(200)))
        writer.result()
    assert stop.is_set()
    assert all(results)
    total = archive.read(
        "SELECT count(*) AS n FROM minute_bars", [], pa.schema([("n", pa.int64())])
    )
    assert total.column("n")[0].as_py() == sum(t.num_rows for t in written.values())
    sizes = archive.table_bytes()
    assert sizes["minute_bars"] == sum(
        (tmp_path / "minute_bars" / f"{d}.parquet").stat().st_size for d in days
    )
    assert sizes["total"] == sizes["minute_bars"]
