"""The server store: PostgreSQL 15+ through psycopg 3, session tables in day partitions.

Bulk writes go through COPY into a temporary table, then one INSERT ... ON CONFLICT into the
real table, so a batch written twice (a retry after a lost acknowledgement) never duplicates a
row. Partitions are created on the first write of a session and dropped by retention.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from tapescan.store.base import (
    Store,
    StoreError,
    StoreUnavailableError,
    last_of_each_key,
    session_values,
)
from tapescan.store.migrations import Migration
from tapescan.store.tables import MINUTE_BARS, TABLES, TableSpec

PARTITIONED = frozenset({"minute_bars", "slot_volume", "scan_events", "scan_entries"})


def partition_name(table: str, session: dt.date) -> str:
    return f"{table}_p{session:%Y%m%d}"


@contextmanager
def _unavailable_on_disconnect() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise StoreUnavailableError(f"PostgreSQL unavailable: {error}".strip()) from error


class PostgresStore(Store):
    backend = "postgres"

    def __init__(self, url: str, schema: str = "tapescan", connect_timeout_s: float = 5.0) -> None:
        super().__init__()
        if not url:
            raise StoreError("store 'postgres' needs TAPESCAN_POSTGRES_URL (postgresql://...)")
        self._url = url
        self.schema = schema
        self._timeout = connect_timeout_s
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        try:
            self.reconnect()
        except StoreUnavailableError as error:
            raise StoreError(f"cannot open PostgreSQL store: {error}") from None

    # ------------------------------------------------------------------ connections

    def _connect(self) -> psycopg.Connection[Any]:
        with _unavailable_on_disconnect():
            connection = psycopg.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self._timeout))
            )
        schema = sql.Identifier(self.schema)
        try:
            with _unavailable_on_disconnect():
                connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                connection.execute(sql.SQL("SET search_path TO {}").format(schema))
                connection.execute("SET TimeZone TO 'UTC'")
        except BaseException:
            connection.close()
            raise
        return connection

    def reconnect(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None and not connection.closed:
                connection.close()
        self._writer = self._connect()
        self._reader = self._connect()
        with self._write_lock, _unavailable_on_disconnect():
            self._writer.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT, applied_at TIMESTAMPTZ DEFAULT now())"
            )

    def _w(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed:
            raise StoreUnavailableError("PostgreSQL connection is closed")
        return self._writer

    def _r(self) -> psycopg.Connection[Any]:
        if self._reader is None or self._reader.closed:
            raise StoreUnavailableError("PostgreSQL connection is closed")
        return self._reader

    def interrupt(self) -> None:
        """Shut the writer's socket down under a call that waits on a hung server.

        A server that is stopped (not gone) keeps the TCP connection open and acknowledged, so
        neither keepalives nor a server-side statement timeout ever end the call; shutting the
        socket makes libpq see the connection closed. The next reconnect opens a fresh one.
        """
        connection = self._writer
        if connection is None or connection.closed:
            return
        with contextlib.suppress(OSError, psycopg.Error):
            fd = connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:  # a duplicate: closing it is harmless
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None and not connection.closed:
                connection.close()

    # ------------------------------------------------------------------ migrations

    def _applied_versions(self) -> set[int]:
        with self._write_lock, _unavailable_on_disconnect():
            rows = self._w().execute("SELECT version FROM schema_migrations").fetchall()
        return {int(row[0]) for row in rows}

    def _apply_migration(self, migration: Migration) -> None:
        with self._write_lock, _unavailable_on_disconnect():
            connection = self._w()
            with connection.transaction():
                for statement in migration.postgres:
                    connection.execute(statement.encode())
                connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [migration.version, migration.name],
                )

    # ------------------------------------------------------------------ writes

    def _ensure_partitions(self, spec: TableSpec, table: pa.Table) -> None:
        if spec.name not in PARTITIONED:
            return
        connection = self._w()
        for session in session_values(spec, table):
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(partition_name(spec.name, session)),
                    sql.Identifier(spec.name),
                    sql.Literal(session),
                    sql.Literal(session + dt.timedelta(days=1)),
                )
            )

    def _append(
        self, spec: TableSpec, table: pa.Table, replace: bool, replacing: pa.Table | None
    ) -> None:
        # Minute bars: every conflict updates, whether or not the write carries corrections
        # (a bar not marked as one conflicts only as the same bar again, or a newer copy of
        # it: last write wins either way, whatever else is in the write).
        replace = replace or replacing is not None or spec.name == MINUTE_BARS.name
        if spec.name == MINUTE_BARS.name:  # an upsert takes each key once per statement
            table = last_of_each_key(table, spec.key)
        with _unavailable_on_disconnect():
            self._ensure_partitions(spec, table)
            connection = self._w()
            staging = sql.Identifier(f"incoming_{spec.name}")
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
            with connection.transaction():
                connection.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} "
                        "(LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(staging, sql.Identifier(spec.name))
                )
                with connection.cursor() as cursor:
                    if spec.has_binary:
                        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)
                        with cursor.copy(copy_sql) as copy:
                            for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
                                copy.write_row(row)
                    else:
                        buffer = io.BytesIO()
                        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                            staging, columns
                        )
                        with cursor.copy(copy_sql) as copy:
                            copy.write(buffer.getbuffer())
                key = sql.SQL(", ").join(sql.Identifier(c) for c in spec.key)
                conflict: sql.Composable
                if replace:
                    updates = sql.SQL(", ").join(
                        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                        for c in spec.columns
                        if c not in spec.key
                    )
                    conflict = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(key, updates)
                else:
                    conflict = sql.SQL("ON CONFLICT DO NOTHING")
                connection.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} {}").format(
                        sql.Identifier(spec.name), columns, columns, staging, conflict
                    )
                )

    # ------------------------------------------------------------------ reads

    def _read(self, query: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        with _unavailable_on_disconnect():
            connection = self._r()
            if any(pa.types.is_binary(field.type) for field in schema):
                rows = connection.execute(query.encode(), list(params)).fetchall()
                values: list[list[Any]] = [[row[i] for row in rows] for i in range(len(schema))]
                return pa.Table.from_arrays(
                    [pa.array(v, type=f.type) for v, f in zip(values, schema, strict=True)],
                    schema=schema,
                )
            buffer = io.BytesIO()
            with connection.cursor() as cursor:
                copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(
                    sql.SQL(query)  # text from our own modules, never from input
                )
                with cursor.copy(copy_sql, list(params)) as copy:
                    for chunk in copy:
                        buffer.write(chunk)
        if buffer.tell() == 0:
            return schema.empty_table()
        buffer.seek(0)
        converted = {
            field.name: (pa.string() if pa.types.is_timestamp(field.type) else field.type)
            for field in schema
        }
        table = pacsv.read_csv(
            buffer,
            convert_options=pacsv.ConvertOptions(
                column_types=converted,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],  # PostgreSQL's text form of booleans
                false_values=["f"],
            ),
        )
        arrays = []
        for field in schema:
            column = table.column(field.name)
            if pa.types.is_timestamp(field.type):
                column = _parse_utc(column, field.type)
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=schema)

    def _execute(self, query: str, params: Sequence[Any]) -> None:
        with _unavailable_on_disconnect():
            self._w().execute(query.encode(), list(params))

    def sessions(self, name: str) -> list[dt.date]:
        spec = TABLES[name]
        with self._read_lock, _unavailable_on_disconnect():
            connection = self._r()
            if name in PARTITIONED:
                rows = connection.execute(
                    "SELECT c.relname FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent "
                    "JOIN pg_namespace n ON n.oid = p.relnamespace "
                    "WHERE p.relname = %s AND n.nspname = %s",
                    [name, self.schema],
                ).fetchall()
                prefix = f"{name}_p"
                return sorted(
                    dt.datetime.strptime(row[0][len(prefix) :], "%Y%m%d").date()
                    for row in rows
                    if row[0].startswith(prefix)
                )
            column = sql.Identifier(spec.session_column or "")
            found = connection.execute(
                sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
                    column, sql.Identifier(name)
                )
            ).fetchall()
        return [row[0] for row in found]

    def drop_session(self, name: str, session: dt.date) -> None:
        with self._write_lock, _unavailable_on_disconnect():
            connection = self._w()
            if name in PARTITIONED:
                connection.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.Identifier(partition_name(name, session))
                    )
                )
            else:
                column = sql.Identifier(TABLES[name].session_column or "")
                connection.execute(
                    sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(name), column),
                    [session],
                )

    def table_bytes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        with self._read_lock, _unavailable_on_disconnect():
            connection = self._r()
            for name in TABLES:
                row = connection.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND (c.relname = %s OR c.oid IN ("
                    " SELECT i.inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent"
                    " WHERE p.relname = %s AND p.relnamespace = n.oid))",
                    [self.schema, name, name],
                ).fetchone()
                sizes[name] = int(row[0]) if row else 0
        sizes["total"] = sum(sizes.values())
        return sizes

    def drop_schema(self) -> None:
        """Remove the whole schema (tests and ``tapescan store reset``)."""
        with self._write_lock, _unavailable_on_disconnect():
            self._w().execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def _parse_utc(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """PostgreSQL's text timestamps in UTC ('2026-11-24 14:30:00+00') as Arrow timestamps."""
    import pyarrow.compute as pc  # noqa: PLC0415

    naive = pc.replace_substring_regex(column, r"\+00$", "")
    parsed = pc.cast(naive, pa.timestamp(target.unit))
    return pc.assume_timezone(parsed, "UTC") if target.tz else parsed
