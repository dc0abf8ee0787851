"""The embedded store: one DuckDB file in the data directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.duck_setup import duckdb_config
from tapescan.store.base import READ_BATCH_ROWS, Store, StoreError, StoreUnavailableError
from tapescan.store.migrations import Migration
from tapescan.store.tables import TABLES, TableSpec

_PLACEHOLDER = re.compile(r"%s")
_T = TypeVar("_T")
# DuckDB holds what was committed since the last checkpoint in its buffer pool, and checkpoints
# once the write-ahead log passes this size. At its default (16 MB of log, ~8-10 MB of data in
# memory) a checkpoint inside the store's 16 MB pool could fail to pin a block; a failed
# checkpoint is fatal: DuckDB gives the database up for the process. At 4 MB, what waits for
# a checkpoint stays below ~6 MB, plus the largest single write (a session's slot volume, 9 MB).
CHECKPOINT_WAL = "4MB"
# A write-ahead log left by a process that did not close the file is replayed into memory when
# the file is opened, and checkpointed at once: with this much room, not the store's pool.
RECOVERY_MEMORY_MB = 64
INVALIDATED = "database has been invalidated"  # DuckDB's words after a fatal error
log = logging.getLogger(__name__)


def sql_string(text: str) -> str:
    """``text`` as a DuckDB string literal (file paths in ``read_parquet``)."""
    return "'" + text.replace("'", "''") + "'"


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    """Undo a failed transaction without hiding why it failed.

    A COMMIT that fails (a full disk) ends the transaction itself, so ROLLBACK then raises
    "no transaction is active", and after a fatal error "database has been invalidated"; either
    would replace the real one.
    """
    with contextlib.suppress(duckdb.TransactionException, duckdb.FatalException):
        cursor.execute("ROLLBACK").fetchall()  # invalidated, the database refuses it too


def _always() -> bool:
    return True


def _given_up(error: duckdb.Error) -> bool:
    """The file must be opened again: DuckDB invalidated it, or a reopen after that failed and
    left the handles closed."""
    if isinstance(error, duckdb.ConnectionException):
        return True
    return isinstance(error, duckdb.FatalException) and INVALIDATED in str(error)


def duck_sql(sql: str) -> str:
    """Shared query text (``%s`` placeholders) in DuckDB's dialect (``?``)."""
    return _PLACEHOLDER.sub("?", sql)


class DuckDbStore(Store):
    backend = "duckdb"

    def __init__(self, path: Path, memory_mb: int = 16) -> None:
        super().__init__()
        self.path = path
        self._memory_limit = f"{memory_mb}MB"
        self._memory_mb = memory_mb
        self._generation = 0  # connections opened so far: a reopen is done once per failure
        self._closed = False
        self._connect(StoreError)
        self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT, applied_at TIMESTAMPTZ DEFAULT now())"
        ).fetchall()

    def _connect(self, error_type: type[StoreError]) -> None:
        """Open the file; the store's handles change only once it is open and checkpointed."""
        wal = self.path.with_name(self.path.name + ".wal")
        con: duckdb.DuckDBPyConnection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            left = wal.stat().st_size if wal.exists() else 0
            memory = self._memory_limit
            if left:
                memory = f"{max(RECOVERY_MEMORY_MB, self._memory_mb)}MB"
            con = duckdb.connect(
                str(self.path),
                config=duckdb_config(
                    memory, preserve_insertion_order=False, checkpoint_threshold=CHECKPOINT_WAL
                ),
            )
            if left:
                log.info(
                    "DuckDB store %s: replayed %.1f MB of write-ahead log", self.path, left / 1e6
                )
                con.execute("CHECKPOINT").fetchall()
                con.execute(f"SET memory_limit = '{self._memory_limit}'").fetchall()
            writer, reader = con.cursor(), con.cursor()
        except (OSError, duckdb.Error) as error:
            if con is not None:
                with contextlib.suppress(duckdb.Error):
                    con.close()
            raise error_type(f"cannot open DuckDB store {self.path}: {error}") from error
        self._con, self._writer, self._reader = con, writer, reader
        self._generation += 1

    def _applied_versions(self) -> set[int]:
        with self._write_lock:
            rows = self._writer.execute("SELECT version FROM schema_migrations").fetchall()
        return {int(row[0]) for row in rows}

    def _apply_migration(self, migration: Migration) -> None:
        with self._write_lock:
            cursor = self._writer
            cursor.execute("BEGIN").fetchall()
            try:
                for statement in migration.duckdb:
                    cursor.execute(statement).fetchall()
                cursor.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    [migration.version, migration.name],
                ).fetchall()
                cursor.execute("COMMIT").fetchall()
            except duckdb.Error:
                _rollback(cursor)
                raise

    def _append(
        self, spec: TableSpec, table: pa.Table, replace: bool, replacing: pa.Table | None
    ) -> None:
        generation = self._generation  # the write lock is held: no reopen meanwhile
        try:
            self._append_once(spec, table, replace, replacing)
        except (duckdb.FatalException, duckdb.ConnectionException):
            # DuckDB gave the database up for this process: an earlier call's fatal error (a
            # failed checkpoint, often after a commit that returned fine), or this COMMIT's own
            # checkpoint, in which case the rows may be in the write-ahead log or not. Opened
            # again (the log keeps every commit), the write goes once more, as rows whose keys
            # are not there yet: landed before or not, it is there once. A second failure is
            # raised. (Closed handles: a reopen after such an error failed; this one may work.)
            with self._read_lock:
                self._reopen_once(generation)
            self._append_once(spec, table, replace, replacing, only_missing=True)

    def _append_once(
        self,
        spec: TableSpec,
        table: pa.Table,
        replace: bool,
        replacing: pa.Table | None = None,
        only_missing: bool = False,
    ) -> None:
        cursor = self._writer
        columns = ", ".join(spec.columns)
        match = " AND ".join(f"i.{k} = {spec.name}.{k}" for k in spec.key)
        cursor.register("incoming", table)
        if replacing is not None:
            cursor.register("replacing", replacing)
        try:
            cursor.execute("BEGIN").fetchall()
            try:
                if replace:  # last write wins per key, without an in-memory index
                    # A semi-join on the key columns only: DELETE ... USING incoming would hash
                    # whole incoming rows (a session's slot volume, 9 MB, needs over 16 MB).
                    cursor.execute(
                        f"DELETE FROM {spec.name} WHERE EXISTS "
                        f"(SELECT 1 FROM incoming i WHERE {match})"
                    ).fetchall()
                elif replacing is not None:
                    # Corrections of the last minutes: the range of their starts lets the scan
                    # skip every row group outside it (DuckDB keeps each one's min and max).
                    starts = pc.min_max(replacing.column("ts"))
                    cursor.execute(
                        f"DELETE FROM {spec.name} WHERE ts BETWEEN ? AND ? AND EXISTS "
                        f"(SELECT 1 FROM replacing i WHERE {match})",
                        [starts["min"].as_py(), starts["max"].as_py()],
                    ).fetchall()
                source = "incoming"
                if only_missing and not replace:
                    source = (
                        f"incoming i WHERE NOT EXISTS (SELECT 1 FROM {spec.name} WHERE {match})"
                    )
                cursor.execute(
                    f"INSERT INTO {spec.name} ({columns}) SELECT {columns} FROM {source}"
                ).fetchall()
                cursor.execute("COMMIT").fetchall()
            except duckdb.Error:
                _rollback(cursor)
                raise
        finally:
            with contextlib.suppress(duckdb.FatalException):  # refused once invalidated
                cursor.unregister("incoming")
                if replacing is not None:
                    cursor.unregister("replacing")

    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        return self._reading(lambda: self._read(sql, params, schema))

    def read_batches(
        self,
        sql: str,
        params: Sequence[Any],
        schema: pa.Schema,
        consume: Callable[[pa.RecordBatch], None],
    ) -> None:
        """Stream: a session of slot volume (9 MB) is never one Arrow table in this process.

        ``consume`` runs with the store's read lock held (both locks if the file had to be
        opened again): it must not call the store.
        """
        consumed = False

        def stream() -> None:
            nonlocal consumed
            for batch in self._stream(sql, params, schema):
                consumed = True
                consume(batch)

        self._reading(stream, lambda: not consumed)  # no batch handed out twice

    def _reading(self, call: Callable[[], _T], may_retry: Callable[[], bool] = _always) -> _T:
        """``call()`` on the reader; if DuckDB gave the file up, once more on the file opened
        again (as a write does). The write lock is taken first (the order every reopen uses),
        with the read lock released meanwhile."""
        with self._read_lock:
            generation = self._generation
            try:
                return call()
            except (duckdb.FatalException, duckdb.ConnectionException) as error:
                if not (_given_up(error) and may_retry()):
                    raise
        with self._write_lock, self._read_lock:
            self._reopen_once(generation)
            return call()

    def _stream(
        self, sql: str, params: Sequence[Any], schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        relation = self._reader.sql(duck_sql(sql), params=list(params))
        if relation is None:
            return
        for batch in relation.to_arrow_reader(READ_BATCH_ROWS):
            yield batch.cast(schema) if batch.schema != schema else batch

    def _read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        relation = self._reader.sql(duck_sql(sql), params=list(params))
        result = relation.to_arrow_table() if relation is not None else schema.empty_table()
        return result.cast(schema) if result.schema != schema else result

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        self._writer.execute(duck_sql(sql), list(params)).fetchall()  # results never left open

    def sessions(self, name: str) -> list[dt.date]:
        column = TABLES[name].session_column
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT DISTINCT {column} FROM {name} ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def drop_session(self, name: str, session: dt.date) -> None:
        column = TABLES[name].session_column
        with self._write_lock:
            self._writer.execute(f"DELETE FROM {name} WHERE {column} = ?", [session]).fetchall()
            self._writer.execute("CHECKPOINT").fetchall()

    def table_bytes(self) -> dict[str, int]:
        """DuckDB shares one file among tables: the file's used blocks, under ``total``."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT block_size, used_blocks FROM pragma_database_size()"
            ).fetchall()
        used = int(rows[0][0]) * int(rows[0][1]) if rows else 0
        return {"total": used, "file": self.path.stat().st_size if self.path.exists() else 0}

    def checkpoint(self) -> None:
        with self._write_lock:
            self._writer.execute("CHECKPOINT").fetchall()

    def reconnect(self) -> None:
        """Reopen the file if DuckDB gave it up.

        A checkpoint that fails (a full disk) invalidates the database for the process: every
        later call fails until it is opened again. Opening replays the write-ahead log, so
        nothing committed is lost; while the disk stays full it may fail again, as an outage.
        """
        with self._write_lock, self._read_lock:
            try:
                self._writer.execute("SELECT 1").fetchall()
                return
            except duckdb.Error:
                pass
            self._reopen()

    def _reopen(self) -> None:
        """Close the connection and open the file again (both locks held).

        Every handle on the file must be closed first: DuckDB hands a new connection to a file
        that still has one open the same (invalidated) database instance.
        """
        for handle in (self._reader, self._writer, self._con):
            with contextlib.suppress(duckdb.Error):  # an invalidated one may refuse
                handle.close()
        self._connect(StoreUnavailableError)

    def _reopen_once(self, generation: int) -> None:
        """Reopen unless another thread did since ``generation`` (both locks held)."""
        if self._closed:
            raise StoreUnavailableError(f"DuckDB store {self.path} is closed")
        if self._generation == generation:
            log.warning("DuckDB store %s was invalidated by an earlier error; reopening", self.path)
            self._reopen()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._closed = True  # closed on purpose: no call opens it again
            self._reader.close()
            self._writer.close()
            self._con.close()
