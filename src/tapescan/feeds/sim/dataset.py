"""Writes a simulated data set in the replay formats (docs/data-formats.md), one day at a time."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tapescan.feeds.history import DAILY_HISTORY_SESSIONS, DailyAccumulator
from tapescan.feeds.sim.generator import DAILY_BAR_SCHEMA, MINUTE_BAR_SCHEMA, SimMarket


class FileFormat(enum.StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class DatasetPaths:
    minute_bars: Path
    daily_bars: Path
    reference: Path

    @classmethod
    def in_directory(cls, directory: Path, file_format: FileFormat) -> DatasetPaths:
        suffix = file_format.value
        return cls(
            minute_bars=directory / f"minute_bars.{suffix}",
            daily_bars=directory / f"daily_bars.{suffix}",
            reference=directory / f"reference.{suffix}",
        )


class _TableWriter:
    """Streams tables of one schema into a Parquet (zstd) or CSV file."""

    def __init__(self, path: Path, schema: pa.Schema, file_format: FileFormat) -> None:
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if file_format is FileFormat.PARQUET:
            self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        else:
            self._writer = pacsv.CSVWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def write_dataset(
    market: SimMarket,
    directory: Path,
    sessions: list[dt.date],
    file_format: FileFormat,
    on_day: Callable[[dt.date], None] | None = None,
) -> DatasetPaths:
    """Minute bars of ``sessions``; daily bars of them and of the 40 sessions before them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = DatasetPaths.in_directory(directory, file_format)
    history = market.calendar.previous_sessions(sessions[0], DAILY_HISTORY_SESSIONS)

    reference = _TableWriter(paths.reference, market.reference_table().schema, file_format)
    reference.write(market.reference_table())
    reference.close()

    daily = _TableWriter(paths.daily_bars, DAILY_BAR_SCHEMA, file_format)
    minutes = _TableWriter(paths.minute_bars, MINUTE_BAR_SCHEMA, file_format)
    try:
        for day in history:
            daily.write(market.modelled_daily_table(day))
        for day in sessions:
            accumulator = DailyAccumulator(len(market.universe), market.calendar.session(day))
            for chunk in market.chunks(day):
                minutes.write(market.minute_table(chunk))
                market.accumulate(accumulator, chunk)
            daily.write(market.daily_table(accumulator))
            if on_day is not None:
                on_day(day)
    finally:
        minutes.close()
        daily.close()
    return paths
