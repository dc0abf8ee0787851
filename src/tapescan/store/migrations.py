"""Versioned schema migrations, applied in order at start; applied versions are recorded.

A migration, once released, never changes: later changes come as new versions. Text is kept per
backend where the dialects differ (partitioning and keys exist in PostgreSQL only: DuckDB's
indexes live in memory and would grow with the years of daily bars, so the embedded store
replaces rows by key with a delete and an insert in one transaction instead).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    duckdb: tuple[str, ...]
    postgres: tuple[str, ...]


_MINUTE_COLUMNS = """
    session DATE NOT NULL,
    symbol TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    open FLOAT8 NOT NULL,
    high FLOAT8 NOT NULL,
    low FLOAT8 NOT NULL,
    close FLOAT8 NOT NULL,
    volume BIGINT NOT NULL,
    vwap FLOAT8,
    trades BIGINT"""
_DAILY_COLUMNS = """
    date DATE NOT NULL,
    symbol TEXT NOT NULL,
    open FLOAT8,
    high FLOAT8,
    low FLOAT8,
    close FLOAT8,
    volume BIGINT{key}"""
_SLOT_COLUMNS = """
    session DATE NOT NULL,
    symbol TEXT NOT NULL,
    volume {blob} NOT NULL{key}"""
_EVENT_COLUMNS = """
    session DATE NOT NULL,
    scan TEXT NOT NULL,
    seq BIGINT NOT NULL,
    asof_ns BIGINT NOT NULL,
    keyframe BOOLEAN NOT NULL,
    payload {blob} NOT NULL"""
_ENTRY_COLUMNS = """
    session DATE NOT NULL,
    scan TEXT NOT NULL,
    seq BIGINT NOT NULL,
    asof_ns BIGINT NOT NULL,
    symbol TEXT NOT NULL,
    entered BOOLEAN NOT NULL,
    rank INTEGER"""
_SYMBOL_COLUMNS = """
    symbol TEXT PRIMARY KEY,
    name TEXT,
    exchange TEXT,
    sector TEXT,
    float_shares FLOAT8,
    shares_outstanding FLOAT8,
    market_cap FLOAT8"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "bars, slot volume, scan events and entries, symbols",
        duckdb=(
            f"CREATE TABLE minute_bars ({_MINUTE_COLUMNS})",
            f"CREATE TABLE daily_bars ({_DAILY_COLUMNS.format(key='')})",
            f"CREATE TABLE slot_volume ({_SLOT_COLUMNS.format(blob='BLOB', key='')})",
            f"CREATE TABLE scan_events ({_EVENT_COLUMNS.format(blob='BLOB')})",
            f"CREATE TABLE scan_entries ({_ENTRY_COLUMNS})",
            f"CREATE TABLE symbols ({_SYMBOL_COLUMNS})",
        ),
        postgres=(
            f"CREATE TABLE minute_bars ({_MINUTE_COLUMNS},"
            " PRIMARY KEY (session, symbol, ts)) PARTITION BY RANGE (session)",
            f"CREATE TABLE daily_bars ("
            f"{_DAILY_COLUMNS.format(key=', PRIMARY KEY (date, symbol)')})",
            f"CREATE TABLE slot_volume ("
            f"{_SLOT_COLUMNS.format(blob='BYTEA', key=', PRIMARY KEY (session, symbol)')})"
            " PARTITION BY RANGE (session)",
            f"CREATE TABLE scan_events ({_EVENT_COLUMNS.format(blob='BYTEA')},"
            " PRIMARY KEY (session, scan, seq, keyframe)) PARTITION BY RANGE (session)",
            f"CREATE TABLE scan_entries ({_ENTRY_COLUMNS},"
            " PRIMARY KEY (session, scan, seq, symbol)) PARTITION BY RANGE (session)",
            f"CREATE TABLE symbols ({_SYMBOL_COLUMNS})",
        ),
    ),
    Migration(
        2,
        "the day a symbol's reference details were taken",
        duckdb=("ALTER TABLE symbols ADD COLUMN updated DATE",),
        postgres=("ALTER TABLE symbols ADD COLUMN updated DATE",),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version
