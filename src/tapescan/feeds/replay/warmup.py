"""Warm-up history from replay files: earlier daily bars and per-slot minute volume."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.base import StepCallback
from tapescan.feeds.history import SLOT_MINUTES, SLOTS_PER_DAY
from tapescan.feeds.replay.days import TradingDays
from tapescan.feeds.replay.files import FileKind, FileSource, ReadLimits
from tapescan.feeds.replay.reader import read_daily_bars
from tapescan.market.calendar import MarketCalendar
from tapescan.model import NS_PER_MINUTE

NS_PER_SLOT = SLOT_MINUTES * NS_PER_MINUTE


def daily_history(
    path: Path, dates: Sequence[dt.date], symbols: pa.Array, limits: ReadLimits
) -> pa.Table:
    """Daily bars of ``dates`` ordered by date, then by row in the universe (``symbols``)."""
    table = read_daily_bars(path, dates, limits)
    rows = pc.index_in(table.column("symbol"), value_set=symbols)
    order = pc.sort_indices(
        pa.table({"date": table.column("date"), "row": rows}),
        sort_keys=[("date", "ascending"), ("row", "ascending")],
    )
    return table.take(order)


def slot_volume(
    path: Path,
    sessions: Sequence[dt.date],
    symbols: pa.Array,
    calendar: MarketCalendar,
    limits: ReadLimits,
    total_rows: int,
    on_step: StepCallback | None = None,
) -> dict[dt.date, npt.NDArray[np.uint32]]:
    """Volume per 5-minute slot from 04:00 ET, (symbols, SLOTS_PER_DAY), of each session.

    One pass over the minute-bar file in any row order; ``on_step`` gets the rows read so far
    and ``total_rows``, the rows of the file.
    """
    source = FileSource(path, FileKind.MINUTE_BARS, limits)
    days = TradingDays(calendar)
    position = {day: k for k, day in enumerate(sessions)}
    pre_open = np.array([calendar.session(day).pre_open_ns for day in sessions], dtype=np.int64)
    volume = np.zeros((len(sessions), len(symbols), SLOTS_PER_DAY), dtype=np.uint32)
    done = 0
    for rows in source.batches(("symbol", "ts", "volume")):
        batch = rows.batch
        ts: npt.NDArray[np.int64] = pc.cast(batch.column("ts"), pa.int64()).to_numpy()
        hours, inverse = TradingDays.hours(ts)
        day = np.array([position.get(days.of_hour(int(h)), -1) for h in hours], dtype=np.int64)
        day = day[inverse]
        slot = (ts - pre_open[day]) // NS_PER_SLOT  # rows of other days are dropped just below
        keep = (day >= 0) & (slot >= 0) & (slot < SLOTS_PER_DAY)
        row = pc.index_in(batch.column("symbol"), value_set=symbols).to_numpy()
        shares = batch.column("volume").to_numpy().astype(np.uint32)  # < 4.3e9 a bar
        np.add.at(volume, (day[keep], row[keep], slot[keep]), shares[keep])
        done += batch.num_rows
        if on_step is not None:
            on_step(done, total_rows)
    return {day: volume[k] for day, k in position.items()}
