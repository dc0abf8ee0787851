"""The Parquet archive of retired sessions: one zstd file per table and session.

Layout: ``root/<table>/<YYYY-MM-DD>.parquet``, rows in the table's key order, the table's exact
Arrow schema. A file is written to a temporary name in the same directory, flushed to disk,
checked (row count and schema from the file's own metadata) and only then renamed into place,
so a reader or a crash never sees half a file. ``read`` answers the same query text as
``Store.read`` (``%s`` placeholders, the table names of ``tables.TABLES``) from an in-memory
DuckDB over the files; DuckDB can also query the files directly (docs/history.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tapescan.store.duck import duck_sql
from tapescan.store.tables import TABLES, TableSpec, conform

ROW_GROUP_ROWS = 1_048_576  # large row groups: few, well-compressed column chunks per file
_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")


class ArchiveError(Exception):
    """A session could not be archived; the message says which file and why."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Archive:
    """Retired sessions as Parquet files under ``root``; reads are safe from several threads."""

    def __init__(self, root: Path, zstd_level: int = 9, memory_limit: str = "256MB") -> None:
        self.root = root
        self.zstd_level = zstd_level
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:", config={"memory_limit": memory_limit})
        self._con.execute("SET TimeZone = 'UTC'")
        self._views: dict[str, tuple[Path, ...] | None] = {}
        for spec in TABLES.values():
            self._con.register(f"_empty_{spec.name}", spec.schema.empty_table())

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
        return conform(spec, pq.read_table(path))

    def table_bytes(self) -> dict[str, int]:
        """Bytes of Parquet per table, and ``total``."""
        sizes = {name: sum(p.stat().st_size for _, p in self._files(name)) for name in TABLES}
        sizes["total"] = sum(sizes.values())
        return sizes

    # ------------------------------------------------------------------ writes

    def write(self, name: str, session: dt.date, table: pa.Table) -> Path:
        """Write one session of ``name`` atomically and verify it; returns the file.

        Raises ArchiveError when the file cannot be written or does not read back with the
        same row count and schema; an earlier file of the session is then left as it was.
        """
        spec = TABLES[name]
        if spec.session_column is None:
            raise ValueError(f"{name} is not keyed by session")
        rows = _in_key_order(spec, conform(spec, table))
        column = rows.column(spec.session_column)
        if rows.num_rows and not pc.all(pc.equal(column, pa.scalar(session, column.type))).as_py():
            raise ValueError(f"{name}: rows of other sessions in the archive file of {session}")
        final = self.path(name, session)
        temporary = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("xb") as handle:
                pq.write_table(
                    rows,
                    handle,
                    compression="zstd",
                    compression_level=self.zstd_level,
                    row_group_size=ROW_GROUP_ROWS,
                )
                handle.flush()
                os.fsync(handle.fileno())
            written = pq.read_metadata(temporary)
            if written.num_rows != rows.num_rows:
                raise ArchiveError(
                    f"{temporary} holds {written.num_rows} rows, expected {rows.num_rows}"
                )
            if not written.schema.to_arrow_schema().equals(spec.schema):
                raise ArchiveError(f"{temporary} does not have the schema of {name}")
            temporary.replace(final)
            _fsync_directory(final.parent)
        except (OSError, pa.ArrowException, ArchiveError) as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise ArchiveError(f"cannot archive {name} {session} to {final}: {error}") from error
        return final

    # ------------------------------------------------------------------ reads

    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        """Rows of ``sql`` over the archive, exactly as ``Store.read`` answers it."""
        with self._lock:
            self._refresh_views()
            relation = self._con.sql(duck_sql(sql), params=list(params))
            result = relation.to_arrow_table() if relation is not None else schema.empty_table()
        return result.cast(schema) if result.schema != schema else result

    def _refresh_views(self) -> None:
        """One view per table over its files (or over no rows), redefined when files change."""
        for spec in TABLES.values():
            files = tuple(path for _, path in self._files(spec.name)) or None
            if spec.name in self._views and self._views[spec.name] == files:
                continue
            columns = ", ".join(spec.columns)
            if files is None:
                source = f"_empty_{spec.name}"
            else:
                source = f"read_parquet([{', '.join(_quote(str(p)) for p in files)}])"
            self._con.execute(
                f"CREATE OR REPLACE TEMP VIEW {spec.name} AS SELECT {columns} FROM {source}"
            ).fetchall()
            self._views[spec.name] = files

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _in_key_order(spec: TableSpec, table: pa.Table) -> pa.Table:
    return table.sort_by([(column, "ascending") for column in spec.key])


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
