"""Every stored table: its Arrow schema, its key and how long it stays hot.

The same names and columns are used by both backends and by the Parquet archive, so one query
text can run against any of them. Session-keyed tables are partitioned by session day in
PostgreSQL and retire to the archive after their retention.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")
SLOT_BYTES = 192 * 4  # one session's per-slot volume of one symbol, uint32 little-endian


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    session_column: str | None  # None: not keyed by session (reference data)
    retention: str | None  # the Settings field holding its hot sessions; None: forever

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def has_binary(self) -> bool:
        return any(pa.types.is_binary(field.type) for field in self.schema)


MINUTE_BARS = TableSpec(
    "minute_bars",
    pa.schema(
        [
            ("session", pa.date32()),
            ("symbol", pa.string()),
            ("ts", UTC_US),  # bar start
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.int64()),
            ("vwap", pa.float64()),
            ("trades", pa.int64()),
        ]
    ),
    ("session", "symbol", "ts"),
    "session",
    "retention_minute_sessions",
)
# A column a write of minute bars may carry, not stored: its rows replace the stored bars of
# their keys (corrections, which Massive sends for up to 15 minutes); the others are new.
REPLACES = "replaces"
DAILY_BARS = TableSpec(
    "daily_bars",
    pa.schema(
        [
            ("date", pa.date32()),
            ("symbol", pa.string()),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.int64()),
        ]
    ),
    ("date", "symbol"),
    "date",
    None,
)
SLOT_VOLUME = TableSpec(
    "slot_volume",
    pa.schema([("session", pa.date32()), ("symbol", pa.string()), ("volume", pa.binary())]),
    ("session", "symbol"),
    "session",
    "retention_slot_sessions",
)
SCAN_EVENTS = TableSpec(
    "scan_events",
    pa.schema(
        [
            ("session", pa.date32()),
            ("scan", pa.string()),
            ("seq", pa.int64()),
            ("asof_ns", pa.int64()),
            ("keyframe", pa.bool_()),
            ("payload", pa.binary()),  # msgpack: a delta, or a whole snapshot when keyframe
        ]
    ),
    ("session", "scan", "seq", "keyframe"),
    "session",
    "retention_event_sessions",
)
SCAN_ENTRIES = TableSpec(
    "scan_entries",
    pa.schema(
        [
            ("session", pa.date32()),
            ("scan", pa.string()),
            ("seq", pa.int64()),
            ("asof_ns", pa.int64()),
            ("symbol", pa.string()),
            ("entered", pa.bool_()),
            ("rank", pa.int32()),  # 1-based position after the change; null on exit
        ]
    ),
    ("session", "scan", "seq", "symbol"),
    "session",
    "retention_event_sessions",
)
SYMBOLS = TableSpec(
    "symbols",
    pa.schema(
        [
            ("symbol", pa.string()),
            ("name", pa.string()),
            ("exchange", pa.string()),
            ("sector", pa.string()),
            ("float_shares", pa.float64()),
            ("shares_outstanding", pa.float64()),
            ("market_cap", pa.float64()),
            ("updated", pa.date32()),  # the day its details were taken (a live feed's); or null
        ]
    ),
    ("symbol",),
    None,
    None,
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (MINUTE_BARS, DAILY_BARS, SLOT_VOLUME, SCAN_EVENTS, SCAN_ENTRIES, SYMBOLS)
}
SESSION_TABLES = tuple(spec for spec in TABLES.values() if spec.retention is not None)


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """``table`` with exactly the spec's columns, order and types (missing optional: null)."""
    arrays = []
    for field in spec.schema:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=spec.schema)
