"""A DuckDB store that an earlier fatal error invalidated (another thread's failed checkpoint,
say) is opened again by the next write, which then lands once; other fatal errors are raised."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tapescan.store.duck import DuckDbStore
from tapescan.store.tables import DAILY_BARS, TableSpec

DAY = dt.date(2026, 11, 24)
INVALIDATED = (
    "FATAL Error: Failed: database has been invalidated because of a previous fatal error. "
    "The database must be restarted prior to being used again."
)


class FailingOnce(DuckDbStore):
    """The store with its first write refused as DuckDB refuses it once invalidated."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(path)
        self.message = message
        self.refused = 0

    def _append_once(self, spec: TableSpec, table: pa.Table, replace: bool) -> None:
        if not self.refused:
            self.refused += 1
            raise duckdb.FatalException(self.message)
        super()._append_once(spec, table, replace)


def bars() -> pa.Table:
    return pa.table(
        {
            "date": [DAY],
            "symbol": ["AAA"],
            "open": [10.0],
            "high": [11.0],
            "low": [9.5],
            "close": [10.5],
            "volume": [1_000],
        }
    )


def test_a_write_after_the_store_was_invalidated_reopens_it_and_lands_once(tmp_path: Path) -> None:
    store = FailingOnce(tmp_path / "store.duckdb", INVALIDATED)
    store.migrate()
    before = store._con
    store.write("daily_bars", bars())
    assert store._con is not before  # opened again
    rows = store.read(
        "SELECT date, symbol, open, high, low, close, volume FROM daily_bars", [], DAILY_BARS.schema
    )
    assert rows.num_rows == 1
    store.close()


def test_any_other_fatal_error_is_raised(tmp_path: Path) -> None:
    store = FailingOnce(tmp_path / "store.duckdb", "FATAL Error: Failed to write the log")
    store.migrate()
    with pytest.raises(duckdb.FatalException):
        store.write("daily_bars", bars())
    store.close()
