"""DuckDB over streamed Arrow batches, for work that must see a whole file: sorting, grouping.

DuckDB pulls the batches itself and spills to a temporary directory once it reaches its memory
limit, so files larger than memory can be sorted or checked for duplicate rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tapescan.duck_setup import duckdb_config
from tapescan.feeds.replay.files import ReplayFileError


def duckdb_failure(path: Path, doing: str, error: duckdb.Error) -> ReplayFileError:
    """A DuckDB error as one line naming the file (DuckDB adds lines of advice to some)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ReplayFileError(path, f"{doing} failed: {lines[0] if lines else type(error).__name__}")


@contextmanager
def duckdb_connection(memory_limit: str) -> Iterator[Any]:
    """An in-memory DuckDB capped at ``memory_limit``, spilling to a directory removed after."""
    with tempfile.TemporaryDirectory(prefix="tapescan-replay-") as spill:
        connection = duckdb.connect(
            config=duckdb_config(memory_limit, temp_directory=spill, preserve_insertion_order=False)
        )
        try:
            yield connection
        finally:
            connection.close()


class GuardedStream:
    """Batches for DuckDB to pull that stop, instead of raising, at a ReplayFileError.

    DuckDB calls the stream from its own threads and would turn the error into a generic
    failure of the query; the error is kept here and raised by :meth:`raise_failure` instead.
    """

    def __init__(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
        self.schema = schema
        self.failure: ReplayFileError | None = None
        self._batches = batches

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._guarded())

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _guarded(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._batches
        except ReplayFileError as exc:
            self.failure = exc


def arrow_reader(relation: Any, batch_rows: int) -> pa.RecordBatchReader:
    """The rows of a query as Arrow batches, fetched as they are read."""
    to_reader = getattr(relation, "to_arrow_reader", None)
    if to_reader is None:  # DuckDB 1.x
        return relation.fetch_arrow_reader(batch_rows)
    return to_reader(batch_rows)
