"""Reading validated replay files: minute bars in time order, daily bars and reference whole.

Minute-bar files can be larger than memory and in any row order. A file already in time order
(the usual case: vendors and the simulator write them so) streams straight through; any other
goes through DuckDB, which sorts it within a memory limit (spilling to a temporary directory)
and hands the sorted rows back batch by batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from types import TracebackType

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.replay.duck import (
    GuardedStream,
    arrow_reader,
    duckdb_connection,
    duckdb_failure,
)
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
    """Minute bars of one file in time order, batch by batch, each minute's bars together.

    ``from_ns`` drops bars that start before it and ``end_ns`` bars that end after it. A file
    already in time order (``time_ordered``, as validation found it) streams straight through:
    Parquet row groups wholly before ``from_ns`` are skipped by their statistics and reading
    stops at the first bar past ``end_ns``, so memory is one batch whatever the file's size.
    Any other file is sorted by DuckDB by (start, symbol) within its memory limit, spilling to
    a temporary directory; the window is applied first so that DuckDB holds only the bars that
    will be replayed.
    """

    def __init__(
        self,
        path: Path,
        *,
        from_ns: int | None = None,
        end_ns: int | None = None,
        time_ordered: bool = False,
        limits: ReadLimits | None = None,
    ) -> None:
        self._source = FileSource(path, FileKind.MINUTE_BARS, limits)
        self._limits = self._source.limits
        self._from_ns = from_ns
        self._end_ns = end_ns
        self._time_ordered = time_ordered
        self._past_end = False  # a batch has passed end_ns: in a time-ordered file, the rest do
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
        """The bars in MINUTE_ROW_SCHEMA, in time order (and by symbol within a minute after a
        sort); a sort runs when the first batch is asked for."""
        if self._time_ordered:
            yield from self._in_file_order()
            return
        try:
            yield from self._sorted()
        except duckdb.Error as exc:
            raise duckdb_failure(self._source.path, "sorting the minute bars", exc) from None

    def _in_file_order(self) -> Iterator[pa.RecordBatch]:
        skip = 0 if self._from_ns is None else self._source.row_groups_before("ts", self._from_ns)
        for batch in self._unsorted(skip):
            if batch.num_rows:
                yield _with_defaults(batch)
            if self._past_end:
                return

    def _sorted(self) -> Iterator[pa.RecordBatch]:
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

    def _unsorted(self, from_row_group: int = 0) -> Iterator[pa.RecordBatch]:
        batches = self._source.batches(MINUTE_COLUMNS, from_row_group=from_row_group)
        for rows in batches:
            batch = rows.batch
            start = pc.cast(batch.column("ts"), pa.int64())
            start_ns = start.to_numpy()
            keep = self._window(start_ns)
            if self._end_ns is not None and len(start_ns):
                self._past_end = int(start_ns[-1]) + NS_PER_MINUTE > self._end_ns
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


def _with_defaults(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Absent vwap as the typical price and absent trades as 0, as _SORTED_QUERY gives them."""
    names = MINUTE_ROW_SCHEMA.names
    typical = pc.divide(
        pc.add(
            pc.add(pc.add(batch.column("open"), batch.column("high")), batch.column("low")),
            batch.column("close"),
        ),
        4.0,
    )
    columns = list(batch.columns)
    columns[names.index("vwap")] = pc.coalesce(batch.column("vwap"), typical)
    columns[names.index("trades")] = pc.coalesce(batch.column("trades"), pa.scalar(0, pa.int64()))
    return pa.record_batch(columns, schema=MINUTE_ROW_SCHEMA)


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
