"""Plain pandas recomputations of the indicators, straight from the bar files (the reference)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tapescan.market.calendar import MarketCalendar
from tapescan.model import AggregateBatch, AggregateKind, Universe


def load_minutes(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["start_ns"] = table.column("ts").cast("int64").to_numpy() * 1000
    ordered: pd.DataFrame = frame.sort_values(["start_ns", "symbol"], kind="stable")
    return ordered.reset_index(drop=True)


def minute_batches(frame: pd.DataFrame, universe: Universe) -> Iterator[AggregateBatch]:
    for start, group in frame.groupby("start_ns", sort=True):
        yield AggregateBatch(
            kind=AggregateKind.MINUTE,
            symbol_index=universe.indices_of(group["symbol"]).astype(np.int32),
            start_ns=np.full(len(group), start, dtype=np.int64),
            open=group["open"].to_numpy(np.float64),
            high=group["high"].to_numpy(np.float64),
            low=group["low"].to_numpy(np.float64),
            close=group["close"].to_numpy(np.float64),
            volume=group["volume"].to_numpy(np.int64),
            vwap=group["vwap"].to_numpy(np.float64),
            trades=group["trades"].to_numpy(np.int32),
        )


def known_by(frame: pd.DataFrame, ts_ns: int) -> pd.DataFrame:
    """Bars that have ended by ``ts_ns`` (a bar is known at its end)."""
    return frame[frame["start_ns"] + 60_000_000_000 <= ts_ns]


def day_bars(
    frame: pd.DataFrame, calendar: MarketCalendar, day: dt.date, until_ns: int
) -> pd.DataFrame:
    times = calendar.session(day)
    mine = frame[
        (frame["start_ns"] >= times.pre_open_ns) & (frame["start_ns"] < times.post_close_ns)
    ]
    return known_by(mine, until_ns)


def expected_volume(
    frame: pd.DataFrame, calendar: MarketCalendar, sessions: list[dt.date], elapsed_ns: int
) -> pd.Series:
    """expected(t): mean over sessions of cumulative volume from 04:00 at the same time of day,
    interpolated linearly between 5-minute slot boundaries (zero for a session without trades)."""
    slot_ns = 5 * 60_000_000_000
    slot = min(elapsed_ns // slot_ns, 191)
    fraction = (elapsed_ns - slot * slot_ns) / slot_ns
    totals = []
    for day in sessions:
        times = calendar.session(day)
        mine = frame[
            (frame["start_ns"] >= times.pre_open_ns) & (frame["start_ns"] < times.post_close_ns)
        ]
        at_start = (
            mine[mine["start_ns"] < times.pre_open_ns + slot * slot_ns]
            .groupby("symbol")["volume"]
            .sum()
        )
        at_end = (
            mine[mine["start_ns"] < times.pre_open_ns + (slot + 1) * slot_ns]
            .groupby("symbol")["volume"]
            .sum()
        )
        totals.append(
            at_start.reindex(at_end.index, fill_value=0) * (1 - fraction) + at_end * fraction
        )
    combined = pd.concat(totals, axis=1).fillna(0.0)
    return combined.sum(axis=1) / len(sessions)


def price_as_of(frame: pd.DataFrame, ts_ns: int) -> pd.Series:
    """Last close of every symbol among bars known by ``ts_ns``."""
    known = known_by(frame, ts_ns)
    return known.groupby("symbol")["close"].last()
