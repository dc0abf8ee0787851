"""The embedded store after DuckDB gives its file up, and after a process that never closed it.

A checkpoint that fails is fatal in DuckDB: the database is invalidated for the process, and a
checkpoint that follows a commit fails without the commit's caller hearing of it. These tests
make real checkpoints fail (DuckDB's own ``debug_checkpoint_abort``) and real processes leave a
write-ahead log behind (``os._exit`` without a close), then check what the store does next.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tapescan.store import duck
from tapescan.store.base import StoreUnavailableError
from tapescan.store.duck import DuckDbStore
from tapescan.store.tables import DAILY_BARS, MINUTE_BARS

FIRST = dt.date(2026, 10, 1)
SYMBOLS = 11_882  # the default universe: one session of daily bars is ~0.7 MB of log


def daily(session: int, symbols: int = SYMBOLS) -> pa.Table:
    rng = np.random.default_rng(session)
    close = rng.uniform(1, 500, symbols).round(2)
    return pa.table(
        {
            "date": pa.array([FIRST + dt.timedelta(days=session)] * symbols, pa.date32()),
            "symbol": [f"S{i:05d}" for i in range(symbols)],
            "open": close,
            "high": close * 1.05,
            "low": close * 0.95,
            "close": close,
            "volume": rng.integers(0, 10**7, symbols),
        }
    )


def count(store: DuckDbStore) -> int:
    return store.count("daily_bars")


def invalidate(store: DuckDbStore) -> None:
    """A checkpoint fails (as one in another thread would): DuckDB gives the file up."""
    store._writer.execute("SET debug_checkpoint_abort = 'before_header'").fetchall()
    with pytest.raises(duckdb.FatalException, match="checkpoint"):
        store._writer.execute("CHECKPOINT").fetchall()
    with pytest.raises(duckdb.FatalException, match=duck.INVALIDATED):
        store._reader.execute("SELECT count(*) FROM daily_bars").fetchall()


@pytest.fixture
def store(tmp_path: Path) -> DuckDbStore:
    store = DuckDbStore(tmp_path / "store.duckdb")
    store.migrate()
    return store


def minute_bars(first_minute: int, symbols: int = 500) -> pa.Table:
    """``symbols`` bars of one minute: a small write, whose commit DuckDB puts in its log."""
    start = dt.datetime(2026, 11, 24, 14, 30, tzinfo=dt.UTC) + dt.timedelta(minutes=first_minute)
    price = np.linspace(10, 20, symbols)
    return pa.table(
        {
            "session": pa.array([dt.date(2026, 11, 24)] * symbols, pa.date32()),
            "symbol": [f"S{i:05d}" for i in range(symbols)],
            "ts": pa.array([start] * symbols, MINUTE_BARS.schema.field("ts").type),
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
            "volume": np.arange(symbols),
            "vwap": price,
            "trades": np.ones(symbols, dtype=np.int64),
        }
    )


@pytest.mark.parametrize("symbols", [500, 11_882])
def test_writes_through_failing_automatic_checkpoints_each_land_once(
    store: DuckDbStore, symbols: int
) -> None:
    """The checkpoint a commit starts fails. A small commit is then in the write-ahead log
    although COMMIT raised; a large one (written to the file directly) is not. Either way the
    write, once more after the file is opened again, leaves each bar there once."""
    store._writer.execute("SET debug_checkpoint_abort = 'before_header'").fetchall()
    minutes = 4 * 2**20 // (symbols * 60) + 30  # ~60 B of log a bar: well past 4 MB
    for minute in range(minutes):
        store.write("minute_bars", minute_bars(minute, symbols))
    assert store._generation > 1  # opened again at least once
    per_minute = store.read(  # grouped by minute only: a DISTINCT would need over 16 MB
        "SELECT ts, count(*) AS n FROM minute_bars GROUP BY ts",
        [],
        pa.schema([("ts", MINUTE_BARS.schema.field("ts").type), ("n", pa.int64())]),
    )
    assert per_minute.num_rows == minutes
    assert set(per_minute.column("n").to_pylist()) == {symbols}
    store.close()


def test_a_reopen_that_fails_is_tried_again_by_the_next_call(
    store: DuckDbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write("daily_bars", daily(0))
    invalidate(store)
    real = duckdb.connect
    refused: list[str] = []

    def refuse_once(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        if not refused:
            refused.append(str(args[0]))
            raise duckdb.IOException("IO Error: Could not set lock on file (a test's refusal)")
        connection: duckdb.DuckDBPyConnection = real(*args, **kwargs)
        return connection

    monkeypatch.setattr(duckdb, "connect", refuse_once)  # the store calls duckdb.connect
    with pytest.raises(StoreUnavailableError, match="a test's refusal"):
        store.read("SELECT count(*) AS n FROM daily_bars", [], pa.schema([("n", pa.int64())]))
    assert count(store) == SYMBOLS  # the next call opens the file
    store.write("daily_bars", daily(1))
    assert count(store) == 2 * SYMBOLS
    store.close()


def test_a_write_after_another_call_invalidated_the_file_reopens_it(store: DuckDbStore) -> None:
    store.write("daily_bars", daily(0))
    invalidate(store)
    before = store._con
    store.write("daily_bars", daily(1))
    assert store._con is not before
    assert count(store) == 2 * SYMBOLS
    store.close()


def test_a_read_after_another_call_invalidated_the_file_reopens_it(store: DuckDbStore) -> None:
    store.write("daily_bars", daily(0))
    invalidate(store)
    rows = store.read(
        "SELECT date, symbol, open, high, low, close, volume FROM daily_bars WHERE date = %s",
        [FIRST],
        DAILY_BARS.schema,
    )
    assert rows.num_rows == SYMBOLS
    opened = store._con
    store.write("daily_bars", daily(1))  # and writes go on, without a second reopen
    assert store._con is opened
    assert count(store) == 2 * SYMBOLS
    store.close()


def test_what_waits_for_a_checkpoint_stays_well_inside_the_buffer_pool(
    store: DuckDbStore,
) -> None:
    """At DuckDB's default threshold (16 MB of log) ~9.5 MB of committed rows stayed in the
    16 MB pool, and the checkpoint that then ran could not pin its blocks: the failed restart."""
    peak = 0
    for session in range(30):
        store.write("daily_bars", daily(session))
        store.write("daily_bars", daily(session))  # a warm-up written again: delete + insert
        tags = store._reader.execute(
            "SELECT tag, memory_usage_bytes FROM duckdb_memory()"
        ).fetchall()
        peak = max(peak, dict(tags).get("IN_MEMORY_TABLE", 0))
    assert peak < 6.5 * 2**20, peak
    store.close()


CRASH = textwrap.dedent(
    """
    import datetime as dt, os, sys
    import duckdb
    con = duckdb.connect(sys.argv[1], config={"checkpoint_threshold": "1GB"})
    for day in range(40):  # one session per transaction, as the store writes them
        con.execute(
            "INSERT INTO daily_bars SELECT DATE '2026-10-01' + ?, 'S' || i, "
            "random() * 100, 101, 0.5, random() * 100, i FROM range(11882) t(i)",
            [day],
        )
    os._exit(0)  # no close, no checkpoint: the rows are only in the write-ahead log
    """
)


def test_a_write_ahead_log_left_by_a_killed_process_is_replayed_and_checkpointed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.duckdb"
    DuckDbStore(path).migrate()
    subprocess.run([sys.executable, "-c", CRASH, str(path)], check=True, timeout=120)
    wal = path.with_name(path.name + ".wal")
    assert wal.stat().st_size > 16 * 2**20  # more than the store's pool holds
    store = DuckDbStore(path)
    assert count(store) == 11_882 * 40
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed at open
    limit = store._reader.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.startswith("15.") or limit.startswith("16"), limit  # back to the store's pool
    store.write("daily_bars", daily(50))
    store.close()
