"""Every DuckDB connection tapescan opens hands freed memory back after a query of more than
4 MB (DuckDB's default keeps up to 128 MiB cached, docs/memory.md)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from tapescan.feeds.replay.duck import duckdb_connection
from tapescan.store.archive import Archive
from tapescan.store.duck import DuckDbStore

FOUR_MB = 4_000_000
UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def flush_threshold(connection: duckdb.DuckDBPyConnection) -> int:
    row = connection.execute(
        "SELECT value FROM duckdb_settings() WHERE name = 'allocator_flush_threshold'"
    ).fetchone()
    assert row is not None
    number, unit = re.fullmatch(r"([0-9.]+) ?([A-Za-z]*)", str(row[0])).groups()  # type: ignore[union-attr]
    return round(float(number) * UNITS[unit])


def test_default_duckdb_keeps_more_so_the_setting_is_what_changes_it() -> None:
    assert flush_threshold(duckdb.connect()) >= 100_000_000


def test_store_archive_and_replay_connections_flush_above_4_mb(tmp_path: Path) -> None:
    store = DuckDbStore(tmp_path / "store.duckdb", 16)
    archive = Archive(tmp_path / "archive")
    assert archive._con is None  # opened at the first read: an instance costs ~30 MB resident
    try:
        assert flush_threshold(store._con) == FOUR_MB
        assert flush_threshold(archive._connection()) == FOUR_MB
        with duckdb_connection("64MB") as replay:
            assert flush_threshold(replay) == FOUR_MB
    finally:
        store.close()
        archive.close()
