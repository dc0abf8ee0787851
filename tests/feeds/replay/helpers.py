"""Small hand-made replay files and ways to run the feed over them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tapescan.feeds.replay import ReadLimits, ReplayFeed, ReplayFiles
from tapescan.market.calendar import et_to_ns
from tapescan.market.clock import Clock, FastClock
from tapescan.model import AggregateBatch, FeedEvent

DAY = dt.date(2025, 3, 10)  # the Monday after clocks went forward: 04:00 ET is 08:00 UTC
PREVIOUS_DAY = dt.date(2025, 3, 7)  # a Friday on standard time: 04:00 ET is 09:00 UTC
SMALL = ReadLimits(batch_rows=4, csv_block_bytes=256)  # many batches even for tiny files
FORMATS = ["csv", "parquet"]
FIELDS = ("symbol_index", "start_ns", "open", "high", "low", "close", "volume", "vwap", "trades")

Bar = tuple[str, int, float, float, float, float, int]  # symbol, start ns, o, h, l, c, volume


def at(hour: int, minute: int, day: dt.date = DAY) -> int:
    return et_to_ns(day, dt.time(hour, minute))


def write(path: Path, table: pa.Table) -> Path:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def bars_table(bars: Sequence[Bar]) -> pa.Table:
    symbol, start, open_, high, low, close, volume = zip(*bars, strict=True)
    return pa.table(
        {
            "symbol": pa.array(symbol, pa.string()),
            "ts": pa.array(np.array(start, dtype=np.int64) // 1000, pa.timestamp("us", tz="UTC")),
            "open": pa.array(open_, pa.float64()),
            "high": pa.array(high, pa.float64()),
            "low": pa.array(low, pa.float64()),
            "close": pa.array(close, pa.float64()),
            "volume": pa.array(volume, pa.int64()),
        }
    )


def bar(symbol: str, start_ns: int, price: float = 10.0, volume: int = 100) -> Bar:
    return (symbol, start_ns, price, price + 0.5, price - 0.5, price + 0.25, volume)


def minute_bars(symbols: Sequence[str], starts: Sequence[int]) -> pa.Table:
    """One bar per symbol and start, ordered by start then symbol."""
    rows = [bar(s, t, 10.0 + k, 100 + k) for t in starts for k, s in enumerate(symbols)]
    return bars_table(rows)


def daily_bars(symbols: Sequence[str], dates: Sequence[dt.date]) -> pa.Table:
    rows = [(s, d) for d in dates for s in symbols]
    n = len(rows)
    return pa.table(
        {
            "symbol": pa.array([s for s, _ in rows], pa.string()),
            "date": pa.array([d for _, d in rows], pa.date32()),
            "open": pa.array(np.full(n, 10.0)),
            "high": pa.array(np.full(n, 11.0)),
            "low": pa.array(np.full(n, 9.0)),
            "close": pa.array(np.full(n, 10.5)),
            "volume": pa.array(np.full(n, 1_000, dtype=np.int64)),
        }
    )


def reference_table(symbols: Sequence[str]) -> pa.Table:
    return pa.table(
        {
            "symbol": pa.array(symbols, pa.string()),
            "name": pa.array([f"{s} Inc." for s in symbols], pa.string()),
            "float_shares": pa.array(np.full(len(symbols), 1_000_000, dtype=np.int64)),
        }
    )


def write_files(
    directory: Path,
    file_format: str,
    minutes: pa.Table,
    daily: pa.Table | None = None,
    reference: pa.Table | None = None,
) -> ReplayFiles:
    symbols = sorted(set(minutes.column("symbol").to_pylist()))
    return ReplayFiles(
        minute_bars=write(directory / f"minute_bars.{file_format}", minutes),
        daily_bars=write(
            directory / f"daily_bars.{file_format}",
            daily if daily is not None else daily_bars(symbols, [PREVIOUS_DAY]),
        ),
        reference=write(
            directory / f"reference.{file_format}",
            reference if reference is not None else reference_table(symbols),
        ),
    )


async def replay(
    feed: ReplayFeed, start_ns: int, end_ns: int | None = None, clock: Clock | None = None
) -> list[FeedEvent]:
    clock = clock or FastClock(start_ns)
    return [event async for event in feed.events(clock, start_ns, end_ns)]


def batches_of(events: Sequence[FeedEvent]) -> list[AggregateBatch]:
    return [event for event in events if isinstance(event, AggregateBatch)]


def column(batches: Sequence[AggregateBatch], name: str) -> npt.NDArray[np.generic]:
    """One field of many batches end to end."""
    return np.concatenate([getattr(batch, name) for batch in batches])


class RecordingClock(FastClock):
    """A FastClock that remembers what it was asked to wait for."""

    def __init__(self, start_ns: int) -> None:
        super().__init__(start_ns)
        self.waits: list[int] = []

    async def sleep_until(self, ts_ns: int) -> None:
        self.waits.append(ts_ns)
        await super().sleep_until(ts_ns)
