"""The Parquet archive of retired sessions: one zstd file per table and session.

Layout: ``root/<table>/<YYYY-MM-DD>.parquet``, rows in the table's key order. Most tables are
stored with their exact Arrow schema (the plain layout). Minute bars and scan events are stored
in compact layouts when their codec can rebuild the session exactly (``bar_codec``,
``event_codec``; the file's ``tapescan.layout`` metadata names the layout): minute bars with
prices as small integers, which the archive's views turn back into the plain columns; scan
events with membership-only payloads plus a second file of value changes,
``<YYYY-MM-DD>.<token>.values.parquet``, named in the events file's metadata.

A file is written to a temporary name in the same directory, flushed to disk, checked (row count
and schema from the file's own metadata) and only then renamed into place, so a reader or a
crash never sees half a file. ``read`` answers the same query text as ``Store.read`` (``%s``
placeholders, the table names of ``tables.TABLES``) from an in-memory DuckDB over the files;
DuckDB can also query the files directly (docs/history.md). Only the ``payload`` of compact
scan events differs from the hot rows: ``scan_at`` and ``read_session`` rebuild it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tapescan.duck_setup import duckdb_config
from tapescan.scan.delta import Snapshot
from tapescan.store import bar_codec, event_codec
from tapescan.store.codecs import NotCompactError
from tapescan.store.duck import duck_sql, sql_string
from tapescan.store.history import scan_at_from_rows
from tapescan.store.tables import TABLES, TableSpec, conform

log = logging.getLogger(__name__)
T = TypeVar("T")

ROW_GROUP_ROWS = 1_048_576  # large row groups: few, well-compressed column chunks per file
LAYOUT_KEY = b"tapescan.layout"
VALUES_KEY = b"tapescan.values"
TYPES_KEY = b"tapescan.types"
PLAIN = "plain"
# Columns that only grow within a file's row order are stored as deltas (Parquet's
# DELTA_BINARY_PACKED, which DuckDB and every Parquet reader decode); the rest keep
# dictionaries, which suit their few distinct values.
DELTA_COLUMNS = {
    "minute_bars": ("ts",),
    "scan_events": ("seq", "asof_ns"),
    "scan_entries": ("seq", "asof_ns"),
    "values": ("tick",),
}
_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")


class ArchiveError(Exception):
    """A session could not be archived; the message says which file and why."""


class Archive:
    """Retired sessions as Parquet files under ``root``; reads are safe from several threads."""

    def __init__(
        self, root: Path, zstd_level: int = 9, memory_limit: str = "256MB", compact: bool = True
    ) -> None:
        self.root = root
        self.zstd_level = zstd_level
        self.compact = compact  # False: every table in the plain layout (for comparisons)
        self._lock = threading.Lock()
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        self._views: dict[str, tuple[tuple[Path, int, int], ...] | None] = {}

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The archive's DuckDB, opened at the first read (call with the lock held).

        A DuckDB instance costs ~30 MB resident before it holds any data, a tenth of the
        process's budget: a process that never reads an archived session never pays it.
        """
        if self._con is None:
            con = duckdb.connect(":memory:", config=duckdb_config(self._memory_limit))
            con.execute("SET TimeZone = 'UTC'")
            for spec in TABLES.values():
                con.register(f"_empty_{spec.name}", spec.schema.empty_table())
            self._con = con
            self._views.clear()
        return self._con

    # ------------------------------------------------------------------ layout

    def path(self, name: str, session: dt.date) -> Path:
        return self.root / name / f"{session.isoformat()}.parquet"

    def _files(self, name: str) -> list[tuple[dt.date, Path]]:
        directory = self.root / name
        if not directory.is_dir():
            return []
        found = []
        for entry in directory.iterdir():
            match = _FILE.match(entry.name)
            if match:
                found.append((dt.date.fromisoformat(match.group(1)), entry))
        return sorted(found)

    def sessions(self, name: str) -> list[dt.date]:
        """Archived sessions of a table, oldest first."""
        return [session for session, _ in self._files(name)]

    def rows(self, name: str, session: dt.date) -> int | None:
        """Rows in one archived session (from the file's metadata); None when not archived."""
        path = self.path(name, session)
        if not path.is_file():
            return None
        return int(pq.read_metadata(path).num_rows)

    def read_session(self, name: str, session: dt.date) -> pa.Table:
        """Every row of one archived session, in key order (empty when not archived)."""
        spec = TABLES[name]
        path = self.path(name, session)
        if not path.is_file():
            return spec.schema.empty_table()
        stored = pq.read_table(path)
        metadata = stored.schema.metadata or {}
        layout = metadata.get(LAYOUT_KEY, PLAIN.encode()).decode()
        if layout == bar_codec.LAYOUT:
            return bar_codec.decode(stored.replace_schema_metadata(None))
        if layout == event_codec.LAYOUT:
            values_path = path.parent / metadata[VALUES_KEY].decode()
            try:
                values = pq.read_table(values_path)
            except (OSError, pa.ArrowException) as error:
                raise ArchiveError(
                    f"{path} needs {values_path}, which cannot be read: {error}"
                ) from error
            types = json.loads(metadata[TYPES_KEY])
            events = conform(spec, stored)
            payloads: list[bytes] = [b""] * events.num_rows
            rebuilt = event_codec.decode(events, values, types)
            for row, (_, payload) in zip(event_codec.time_order(events), rebuilt, strict=True):
                payloads[row] = payload
            column = events.schema.get_field_index("payload")
            return events.set_column(column, "payload", pa.array(payloads, pa.binary()))
        return conform(spec, stored)

    def table_bytes(self) -> dict[str, int]:
        """Bytes of Parquet per table (value files included), and ``total``."""
        sizes = {}
        for name in TABLES:
            directory = self.root / name
            files = directory.glob("*.parquet") if directory.is_dir() else ()
            sizes[name] = sum(p.stat().st_size for p in files)
        sizes["total"] = sum(sizes.values())
        return sizes

    def layout(self, name: str, session: dt.date) -> str | None:
        """The layout of one archived session (``plain`` or a codec's name); None if absent."""
        path = self.path(name, session)
        if not path.is_file():
            return None
        return _layout(pq.read_metadata(path))

    # ------------------------------------------------------------------ writes

    def write(self, name: str, session: dt.date, table: pa.Table) -> Path:
        """Write one session of ``name`` atomically and verify it; returns the file.

        Minute bars and scan events go in their compact layout when it rebuilds the session
        exactly, else in the plain one. Raises ArchiveError when the file cannot be written or
        does not read back with the same row count and schema; an earlier file of the session
        is then left as it was.
        """
        spec = TABLES[name]
        if spec.session_column is None:
            raise ValueError(f"{name} is not keyed by session")
        rows = _in_key_order(spec, conform(spec, table))
        column = rows.column(spec.session_column)
        if rows.num_rows and not pc.all(pc.equal(column, pa.scalar(session, column.type))).as_py():
            raise ValueError(f"{name}: rows of other sessions in the archive file of {session}")
        final = self.path(name, session)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if name == "minute_bars" and self.compact:
                self._write_minute_bars(final, rows)
            elif name == "scan_events" and self.compact:
                self._write_scan_events(final, session, rows)
            else:
                self._write_file(final, rows, {}, ROW_GROUP_ROWS, DELTA_COLUMNS.get(name, ()))
            if name == "scan_events":
                _drop_unreferenced_values(final, session)
        except (OSError, pa.ArrowException, ArchiveError) as error:
            raise ArchiveError(f"cannot archive {name} {session} to {final}: {error}") from error
        return final

    def _write_minute_bars(self, final: Path, rows: pa.Table) -> None:
        compact = _compact_or_none(bar_codec.encode, rows, final)
        if compact is None:
            self._write_file(final, rows, {}, ROW_GROUP_ROWS, DELTA_COLUMNS["minute_bars"])
            return
        self._write_file(
            final,
            compact,
            {LAYOUT_KEY: bar_codec.LAYOUT.encode()},
            ROW_GROUP_ROWS,
            DELTA_COLUMNS["minute_bars"],
        )

    def _write_scan_events(self, final: Path, session: dt.date, rows: pa.Table) -> None:
        """The values file first, then the events file that names it, then old values files go:
        a crash in between leaves the previous pair or an unreferenced values file."""
        compact = _compact_or_none(event_codec.encode, rows, final)
        if compact is None:
            self._write_file(final, rows, {}, ROW_GROUP_ROWS, DELTA_COLUMNS["scan_events"])
        else:
            values = final.parent / f"{session.isoformat()}.{uuid.uuid4().hex[:12]}.values.parquet"
            self._write_file(values, compact.values, {}, ROW_GROUP_ROWS, DELTA_COLUMNS["values"])
            metadata = {
                LAYOUT_KEY: event_codec.LAYOUT.encode(),
                VALUES_KEY: values.name.encode(),
                TYPES_KEY: json.dumps(compact.types, sort_keys=True).encode(),
            }
            try:
                self._write_file(
                    final, compact.events, metadata, ROW_GROUP_ROWS, DELTA_COLUMNS["scan_events"]
                )
            except (OSError, pa.ArrowException, ArchiveError):
                with contextlib.suppress(OSError):
                    values.unlink(missing_ok=True)
                raise

    def _write_file(
        self,
        final: Path,
        table: pa.Table,
        metadata: dict[bytes, bytes],
        row_group_rows: int,
        delta_columns: tuple[str, ...] = (),
    ) -> None:
        """``table`` to ``final`` through a verified temporary file and an atomic rename."""
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        temporary = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            with temporary.open("xb") as handle:
                pq.write_table(
                    table,
                    handle,
                    compression="zstd",
                    compression_level=self.zstd_level,
                    row_group_size=row_group_rows,
                    use_dictionary=[c for c in table.column_names if c not in delta_columns],
                    column_encoding=dict.fromkeys(delta_columns, "DELTA_BINARY_PACKED") or None,
                )
                handle.flush()
                os.fsync(handle.fileno())
            written = pq.read_metadata(temporary)
            if written.num_rows != table.num_rows:
                raise ArchiveError(
                    f"{temporary} holds {written.num_rows} rows, expected {table.num_rows}"
                )
            if not written.schema.to_arrow_schema().equals(table.schema):
                raise ArchiveError(f"{temporary} does not have the schema written")
            temporary.replace(final)
            _fsync_directory(final.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise

    def scan_at(self, scan: str, session: dt.date, at_ns: int) -> Snapshot | None:
        """``scan`` as published at ``at_ns`` of an archived session; None when not archived or
        nothing was published by then (the same answer ``History.scan_at`` gives from rows)."""
        path = self.path("scan_events", session)
        if not path.is_file():
            return None
        metadata = pq.read_metadata(path)
        if _layout(metadata) != event_codec.LAYOUT:
            return scan_at_from_rows(self, scan, session, at_ns)
        with self._lock:
            return event_codec.scan_at(
                self._connection(),
                str(path),
                str(path.parent / (_values_file(metadata) or "")),
                json.loads(metadata.metadata[TYPES_KEY]),
                scan,
                at_ns,
            )

    # ------------------------------------------------------------------ reads

    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        """Rows of ``sql`` over the archive, exactly as ``Store.read`` answers it."""
        with self._lock:
            self._refresh_views()
            relation = self._connection().sql(duck_sql(sql), params=list(params))
            result = relation.to_arrow_table() if relation is not None else schema.empty_table()
        return result.cast(schema) if result.schema != schema else result

    def _refresh_views(self) -> None:
        """One view per table over its files (or over no rows), redefined when files change.

        Compact minute-bar files are read through ``bar_codec.sql_select``, so the view has the
        plain columns whatever the layout of each file.
        """
        for spec in TABLES.values():
            paths = [path for _, path in self._files(spec.name)]
            stats = [p.stat() for p in paths]
            state = (
                tuple((p, s.st_mtime_ns, s.st_size) for p, s in zip(paths, stats, strict=True))
                or None
            )
            if spec.name in self._views and self._views[spec.name] == state:
                continue
            columns = ", ".join(spec.columns)
            if not paths:
                query = f"SELECT {columns} FROM _empty_{spec.name}"
            else:
                by_layout: dict[str, list[Path]] = {}
                for path in paths:
                    by_layout.setdefault(_layout(pq.read_metadata(path)), []).append(path)
                parts = []
                for layout, files in sorted(by_layout.items()):
                    source = f"read_parquet([{', '.join(sql_string(str(p)) for p in files)}])"
                    if layout == bar_codec.LAYOUT:
                        parts.append(bar_codec.sql_select(source))
                    else:
                        parts.append(f"SELECT {columns} FROM {source}")
                query = " UNION ALL ".join(parts)
            self._connection().execute(
                f"CREATE OR REPLACE TEMP VIEW {spec.name} AS {query}"
            ).fetchall()
            self._views[spec.name] = state

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def _compact_or_none(encode: Callable[[pa.Table], T], rows: pa.Table, final: Path) -> T | None:
    """``encode(rows)``, or None (logged) when the session must stay plain: the codec cannot
    rebuild it exactly, or the codec failed, which must not keep a session from its archive."""
    try:
        return encode(rows)
    except NotCompactError as why:
        log.info("archive: %s in the plain layout: %s", final, why)
    except Exception:
        log.exception("archive: %s in the plain layout: the codec failed", final)
    return None


def _drop_unreferenced_values(final: Path, session: dt.date) -> None:
    """Remove the session's values files its events file does not name (earlier versions)."""
    keep = _values_file(pq.read_metadata(final))
    for old in final.parent.glob(f"{session.isoformat()}.*.values.parquet"):
        if old.name != keep:
            with contextlib.suppress(OSError):
                old.unlink()


def _layout(metadata: pq.FileMetaData) -> str:
    found = (metadata.metadata or {}).get(LAYOUT_KEY)
    return found.decode() if found else PLAIN


def _values_file(metadata: pq.FileMetaData) -> str | None:
    found = (metadata.metadata or {}).get(VALUES_KEY)
    return found.decode() if found else None


def _in_key_order(spec: TableSpec, table: pa.Table) -> pa.Table:
    """``table`` sorted by the key; as it is when it already is (retention exports sorted rows,
    and a copy of a session's scan events is ~465 MB)."""
    order = pc.sort_indices(table, sort_keys=[(column, "ascending") for column in spec.key])
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):
        return table
    return table.take(order)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
