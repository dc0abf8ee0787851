"""Reading validated replay files: minute bars in time order, daily bars and reference whole.

Minute-bar files can be larger than memory and in any row order, so they stream through DuckDB,
which sorts them within a memory limit (spilling to a temporary directory) and hands the sorted
rows back batch by batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.replay.duck import GuardedStream, arrow_reader, duckdb_connection
from tapescan.feeds.replay.files import FileKind, FileSource, ReadLimits
from tapescan.model import NS_PER_MINUTE

MINUTE_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades")

# What MinuteBarReader yields: one row per bar, ordered by (start_ns, symbol). Instants are
# integer nanoseconds: DuckDB's own timestamps would round them to microseconds.
MINUTE_ROW_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("start_ns", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("vwap", pa.float64()),
        ("trades", pa.int64()),
    ]
)

# Absent vwap is the bar's typical price and absent trades 0, as docs/data-formats.md allows.
_SORTED_QUERY = """
SELECT symbol, start_ns, open, high, low, close, volume,
       coalesce(vwap, (open + high + low + close) / 4) AS vwap,
       coalesce(trades, 0) AS trades
FROM minute_bars
ORDER BY start_ns, symbol
"""


def read_reference(path: Path, limits: ReadLimits | None = None) -> pa.Table:
    """The reference file in file order, every column of the reference schema present."""
    source = FileSource(path, FileKind.REFERENCE, limits)
    return _table(source, (rows.batch for rows in source.batches()))


def read_daily_bars(
    path: Path, dates: Collection[dt.date] | None = None, limits: ReadLimits | None = None
) -> pa.Table:
    """The daily bars of ``dates`` (all when None), in file order."""
    source = FileSource(path, FileKind.DAILY_BARS, limits)
    wanted = None if dates is None else pa.array(sorted(dates), pa.date32())

    def kept() -> Iterator[pa.RecordBatch]:
        for rows in source.batches():
            if wanted is None:
                yield rows.batch
            else:
                yield rows.batch.filter(pc.is_in(rows.batch.column("date"), value_set=wanted))

    return _table(source, kept())


def _table(source: FileSource, batches: Iterator[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=source.spec.schema)


class MinuteBarReader:
    """Minute bars of one file sorted by (start, symbol), fetched from DuckDB batch by batch.

    ``from_ns`` drops bars that start before it and ``end_ns`` bars that end after it; both are
    applied before the sort so that DuckDB holds only the bars that will be replayed.
    """

    def __init__(
        self,
        path: Path,
        *,
        from_ns: int | None = None,
        end_ns: int | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        self._source = FileSource(path, FileKind.MINUTE_BARS, limits)
        self._limits = self._source.limits
        self._from_ns = from_ns
        self._end_ns = end_ns
        self._resources = ExitStack()

    def __enter__(self) -> MinuteBarReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._resources.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The bars in MINUTE_ROW_SCHEMA; the sort runs when the first batch is asked for."""
        connection = self._resources.enter_context(duckdb_connection(self._limits.memory_limit))
        stream = GuardedStream(MINUTE_ROW_SCHEMA, self._unsorted())
        connection.register("minute_bars", stream.reader())
        reader = arrow_reader(connection.sql(_SORTED_QUERY), self._limits.batch_rows)
        self._resources.callback(reader.close)
        for batch in reader:
            # The sort read the whole file first: a file changed since validation shows here.
            stream.raise_failure()
            yield batch
        stream.raise_failure()

    def _unsorted(self) -> Iterator[pa.RecordBatch]:
        for rows in self._source.batches(MINUTE_COLUMNS):
            batch = rows.batch
            start = pc.cast(batch.column("ts"), pa.int64())
            keep = self._window(start.to_numpy())
            if keep is not None:
                batch, start = batch.filter(keep), start.filter(keep)
            columns = [batch.column(name) for name in MINUTE_COLUMNS]
            columns[1] = start
            yield pa.record_batch(columns, schema=MINUTE_ROW_SCHEMA)

    def _window(self, start_ns: npt.NDArray[np.int64]) -> pa.Array | None:
        if self._from_ns is None and self._end_ns is None:
            return None
        keep = np.ones(len(start_ns), dtype=bool)
        if self._from_ns is not None:
            keep &= start_ns >= self._from_ns
        if self._end_ns is not None:
            keep &= start_ns + NS_PER_MINUTE <= self._end_ns
        return pa.array(keep)


def minute_groups(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Sorted bars regrouped into one table per bar start; a minute may span fetched batches."""
    pending: list[pa.RecordBatch] = []
    pending_start = 0
    for batch in batches:
        start: npt.NDArray[np.int64] = batch.column("start_ns").to_numpy()
        cuts = np.flatnonzero(np.diff(start)) + 1
        for begin, end in pairwise([0, *cuts.tolist(), len(start)]):
            if begin == end:
                continue
            if pending and int(start[begin]) != pending_start:
                yield pa.Table.from_batches(pending)
                pending = []
            pending.append(batch.slice(begin, end - begin))
            pending_start = int(start[begin])
    if pending:
        yield pa.Table.from_batches(pending)
