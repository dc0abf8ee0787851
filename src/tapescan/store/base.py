"""The store contract both backends implement, and what they share.

A store is used from threads: the recorder writes from its own thread while API requests read
from the server's worker threads. Each backend keeps one connection for writing and one for
reading, each behind its own lock, so a long write never waits for a read and the other way
round. Query text is shared: ``%s`` placeholders, table names from ``tables.TABLES``.
"""

from __future__ import annotations

import abc
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.store.migrations import MIGRATIONS, Migration
from tapescan.store.tables import MINUTE_BARS, REPLACES, TABLES, TableSpec, conform

READ_BATCH_ROWS = 1024  # rows handed out at a time by read_batches (~0.8 MB of slot volume)
REPLACE_TABLES = frozenset({"symbols", "daily_bars", "slot_volume"})  # last write wins per key


class StoreError(Exception):
    """The store cannot be used as configured; the message says what to fix."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now; the write can be retried later."""


class Store(abc.ABC):
    backend: ClassVar[str]

    def __init__(self) -> None:
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # ------------------------------------------------------------------ backend primitives

    @abc.abstractmethod
    def _applied_versions(self) -> set[int]: ...

    @abc.abstractmethod
    def _apply_migration(self, migration: Migration) -> None: ...

    @abc.abstractmethod
    def _append(
        self, spec: TableSpec, table: pa.Table, replace: bool, replacing: pa.Table | None
    ) -> None:
        """Bulk-insert ``table`` in one transaction; keyed duplicates are ignored or replaced
        (all with ``replace``; else those whose keys are in ``replacing``)."""

    @abc.abstractmethod
    def _read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table: ...

    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        """Run one statement that returns nothing, in its own transaction."""

    @abc.abstractmethod
    def sessions(self, name: str) -> list[dt.date]:
        """Sessions present (hot) in a session-keyed table, oldest first."""

    @abc.abstractmethod
    def drop_session(self, name: str, session: dt.date) -> None:
        """Remove one session of a table (a partition in PostgreSQL)."""

    @abc.abstractmethod
    def table_bytes(self) -> dict[str, int]:
        """Bytes on disk per table (with indexes), as the database counts them."""

    @abc.abstractmethod
    def reconnect(self) -> None:
        """Open fresh connections; raises StoreUnavailableError while the database is down."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def interrupt(self) -> None:  # noqa: B027 - an optional hook: only some backends can hang
        """Break off a write stuck on a database that stopped answering (from another thread).

        The stuck call then raises StoreUnavailableError. A no-op where a write cannot hang on a
        peer (the embedded store).
        """

    # ------------------------------------------------------------------ shared

    def migrate(self) -> list[int]:
        """Apply every migration not yet applied, in order; returns the versions applied."""
        done = self._applied_versions()
        applied = []
        for migration in MIGRATIONS:
            if migration.version not in done:
                self._apply_migration(migration)
                applied.append(migration.version)
        return applied

    def schema_version(self) -> int:
        return max(self._applied_versions(), default=0)

    def write(self, name: str, table: pa.Table) -> None:
        """Append rows to table ``name`` (its columns; extra ones are an error). Minute bars
        may carry ``REPLACES``: the rows it marks replace the stored rows of their keys."""
        spec = TABLES[name]
        replacing: pa.Table | None = None
        if name == MINUTE_BARS.name and REPLACES in table.column_names:
            marked = table.filter(table.column(REPLACES))
            table = table.drop_columns([REPLACES])
            if marked.num_rows:
                replacing = marked.select(list(spec.key))
                table = last_of_each_key(table, spec.key)  # a bar and its correction together
        extra = set(table.column_names) - set(spec.columns)
        if extra:
            raise ValueError(f"{name} has no column(s) {', '.join(sorted(extra))}")
        if table.num_rows == 0:
            return
        with self._write_lock:
            self._append(spec, conform(spec, table), name in REPLACE_TABLES, replacing)

    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        """Rows of ``sql`` (``%s`` placeholders) as an Arrow table of ``schema``."""
        with self._read_lock:
            return self._read(sql, params, schema)

    def read_batches(
        self,
        sql: str,
        params: Sequence[Any],
        schema: pa.Schema,
        consume: Callable[[pa.RecordBatch], None],
    ) -> None:
        """Hand the rows of ``sql`` to ``consume`` a batch at a time, never all at once where
        the backend can stream them (the embedded store); here, read whole and handed out."""
        for batch in self.read(sql, params, schema).to_batches(READ_BATCH_ROWS):
            consume(batch)

    def export_session(self, name: str, session: dt.date) -> pa.Table:
        """Every row of one session of a session-keyed table, in key order (for the archive)."""
        spec = TABLES[name]
        column = spec.session_column
        # Sorted here, not by the database: a session of scan events is ~465 MB at full size,
        # more than the embedded store's 16 MB buffer pool can sort; a plain scan streams.
        rows = self.read(
            f"SELECT {', '.join(spec.columns)} FROM {name} WHERE {column} = %s",
            [session],
            spec.schema,
        )
        return rows.sort_by([(key, "ascending") for key in spec.key])

    def truncate_from(self, session: dt.date, from_ns: int) -> None:
        """Forget what ``session`` recorded from ``from_ns`` on: a run that starts there records
        it again (a replay run twice, or a restart that resumes after its last stored minute)."""
        since = dt.datetime.fromtimestamp(from_ns / 1e9, dt.UTC) - dt.timedelta(minutes=1)
        with self._write_lock:
            self._execute(
                "DELETE FROM minute_bars WHERE session = %s AND ts > %s", [session, since]
            )
            for name in ("scan_events", "scan_entries"):
                self._execute(
                    f"DELETE FROM {name} WHERE session = %s AND asof_ns >= %s", [session, from_ns]
                )

    def count(self, name: str) -> int:
        table = self.read(f"SELECT count(*) AS n FROM {name}", [], pa.schema([("n", pa.int64())]))
        return int(table.column("n")[0].as_py())


def session_values(spec: TableSpec, table: pa.Table) -> list[dt.date]:
    """The distinct sessions in ``table`` (for creating partitions before a write)."""
    assert spec.session_column is not None
    values: list[dt.date] = pc.unique(table.column(spec.session_column)).to_pylist()
    return sorted(values)


def last_of_each_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """``table`` with only the last row of each key, in their order."""
    position = "__position"
    numbered = table.append_column(position, pa.array(np.arange(table.num_rows)))
    last = numbered.group_by(list(key), use_threads=False).aggregate([(position, "max")])
    keep = pc.sort_indices(last.column(f"{position}_max"))
    return table.take(pc.take(last.column(f"{position}_max"), keep))
