"""Replay of the user's own files (docs/data-formats.md) as a feed, at the clock's pace."""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, Collection, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.base import FeedError, StepCallback
from tapescan.feeds.history import DAILY_HISTORY_SESSIONS, MINUTE_HISTORY_SESSIONS, Warmup
from tapescan.feeds.replay.files import SPECS, FileKind, ReadLimits, ReplayFiles
from tapescan.feeds.replay.reader import MinuteBarReader, minute_groups, read_reference
from tapescan.feeds.replay.validate import ReplaySummary, utc_text, validate_files
from tapescan.feeds.replay.warmup import daily_history, slot_volume
from tapescan.market.calendar import MarketCalendar, NotASessionError, market_calendar
from tapescan.market.clock import Clock
from tapescan.model import (
    AggregateBatch,
    AggregateKind,
    FeedEvent,
    FeedState,
    FeedStatus,
    Universe,
    stamped,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
SHOWN_DAYS = 12  # trading days listed in full in a message; more are shortened
S = TypeVar("S", bound=np.generic)


class ReplayFeed:
    """Minute bars from files, each emitted when it ends (ts + 60 s) by the clock.

    Build it with :meth:`open` or :meth:`from_files`, which validate the files first, so that a
    bad file fails at start with a ReplayFileError naming its row and field.
    """

    def __init__(
        self,
        files: ReplayFiles,
        summary: ReplaySummary,
        *,
        calendar: MarketCalendar | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        self.files = files
        self.summary = summary
        self._calendar = calendar or market_calendar()
        self._limits = limits or ReadLimits()
        self._universe = _universe(summary)
        self._symbols = pa.array(self._universe.symbols, pa.string())
        self._reference = _aligned(self._read_reference(), self._symbols)

    @classmethod
    def open(
        cls,
        minute_bars: Path,
        daily_bars: Path,
        reference: Path | None = None,
        calendar: MarketCalendar | None = None,
        *,
        limits: ReadLimits | None = None,
    ) -> ReplayFeed:
        """Validate the files, then make the feed; raises ReplayFileError."""
        return cls.from_files(
            ReplayFiles(minute_bars, daily_bars, reference), calendar=calendar, limits=limits
        )

    @classmethod
    def from_files(
        cls,
        files: ReplayFiles,
        *,
        calendar: MarketCalendar | None = None,
        limits: ReadLimits | None = None,
    ) -> ReplayFeed:
        """Validate the files, then make the feed; raises ReplayFileError."""
        calendar = calendar or market_calendar()
        summary = validate_files(files, calendar=calendar, limits=limits)
        return cls(files, summary, calendar=calendar, limits=limits)

    @property
    def name(self) -> str:
        return "replay"

    @property
    def universe(self) -> Universe:
        return self._universe

    @property
    def calendar(self) -> MarketCalendar:
        return self._calendar

    @property
    def limits(self) -> ReadLimits:
        return self._limits

    @property
    def sessions(self) -> tuple[dt.date, ...]:
        """The trading days that have minute bars, ascending."""
        return self.summary.minute_bars.sessions

    def complete_session(self) -> dt.date | None:
        """The first trading day with a complete warm-up in the files, None when none has.

        Complete: MINUTE_HISTORY_SESSIONS earlier sessions of minute bars (the RVOL baseline)
        and DAILY_HISTORY_SESSIONS earlier dates of daily bars (previous close, ATR, 20-day
        average volume).
        """
        daily = self.summary.daily_bars.sessions
        for position, day in enumerate(self.sessions):
            earlier_daily = bisect.bisect_left(daily, day)
            if position >= MINUTE_HISTORY_SESSIONS and earlier_daily >= DAILY_HISTORY_SESSIONS:
                return day
        return None

    def start_session(self) -> dt.date:
        """Where a replay starts by default: the first day with a complete warm-up, else the
        last day of the files (the most history a day of these files can have)."""
        complete = self.complete_session()
        return complete if complete is not None else self.sessions[-1]

    def first_session(self) -> dt.date:
        """The session a run replays first (start_session), saying why in the log."""
        day = self.start_session()
        earlier = self.sessions.index(day)
        daily = bisect.bisect_left(self.summary.daily_bars.sessions, day)
        files = f"the files hold {_days(self.sessions)}"
        if self.complete_session() == day:
            log.info(
                "replay starts on %s, the first day with a complete RVOL baseline (%d earlier "
                "sessions of minute bars) and daily history (%d dates); %s",
                day,
                earlier,
                daily,
                files,
            )
        else:
            log.warning(
                "replay starts on %s, the last day, with a partial RVOL baseline: no day has "
                "%d earlier sessions of minute bars and %d dates of daily bars (this one has "
                "%d and %d); %s",
                day,
                MINUTE_HISTORY_SESSIONS,
                DAILY_HISTORY_SESSIONS,
                earlier,
                daily,
                files,
            )
        return day

    def default_start_ns(self) -> int:
        """04:00 ET of start_session(): where a replay starts by default."""
        return self._calendar.session(self.start_session()).pre_open_ns

    def require_session(self, session: dt.date) -> None:
        """Raise FeedError unless the minute-bar file has bars of trading day ``session``."""
        if session not in self.sessions:
            raise FeedError(
                f"{self.files.minute_bars.name} has no minute bars for {session.isoformat()}; "
                f"it holds {_days(self.sessions)}"
            )

    def details(
        self, session: dt.date, stored: pa.Table, on_step: StepCallback | None = None
    ) -> None:
        """None: the reference file holds every detail."""
        return None

    def reference(self) -> pa.Table:
        """One row per universe symbol in universe order; symbols the file lacks are null."""
        return self._reference

    def connection(self) -> None:
        """No connection to report (health's feed ``connection`` is null)."""
        return None

    def interrupt(self) -> None:
        """Nothing waits on a network here."""

    def warmup(
        self,
        session: dt.date,
        on_step: StepCallback | None = None,
        only: Collection[dt.date] | None = None,
    ) -> Warmup:
        """Daily bars of the last 40 file dates and slot volume of the last 10 sessions before
        (``only`` those of them, when given).

        ``on_step`` follows the pass over the minute-bar file: (rows read, rows in the file).
        """
        dates = [day for day in self.summary.daily_bars.sessions if day < session]
        dates = dates[-DAILY_HISTORY_SESSIONS:]
        earlier = [day for day in self.sessions if day < session][-MINUTE_HISTORY_SESSIONS:]
        if only is not None:
            dates = [day for day in dates if day in only]
            earlier = [day for day in earlier if day in only]
        daily = daily_history(self.files.daily_bars, dates, self._symbols, self._limits)
        slots = {}
        if earlier:
            slots = slot_volume(
                self.files.minute_bars,
                earlier,
                self._symbols,
                self._calendar,
                self._limits,
                self.summary.minute_bars.rows,
                on_step,
            )
        return Warmup.of(session, daily, slots)

    async def events(
        self, clock: Clock, start_ns: int, end_ns: int | None = None, resume_ns: int | None = None
    ) -> AsyncGenerator[FeedEvent, None]:
        """Bars from 04:00 ET of the trading day holding ``start_ns`` until ``end_ns``.

        Bars that ended by ``start_ns`` come at once; later ones when the clock reaches their
        end. A bar that ends after ``end_ns`` is never emitted.
        """
        day_start_ns = self._day_start_ns(start_ns)
        source = self.files.minute_bars.name
        yield FeedStatus(
            FeedState.REPLAYING,
            f"replaying {source} from {utc_text(start_ns)}",
            start_ns,
            time.time_ns(),
        )
        reached_ns = start_ns
        with MinuteBarReader(
            self.files.minute_bars,
            from_ns=day_start_ns,
            end_ns=end_ns,
            time_ordered=self.summary.minute_bars.time_ordered,
            limits=self._limits,
        ) as reader:
            groups = minute_groups(self._indexed(reader.batches()))
            while (group := await _next_in_thread(groups)) is not None:
                batch = _aggregate(group)
                if resume_ns is not None and batch.ts_event_ns <= resume_ns:
                    continue  # recovered from the store
                if batch.ts_event_ns > start_ns:
                    await clock.sleep_until(batch.ts_event_ns)
                reached_ns = max(reached_ns, batch.ts_event_ns)
                yield stamped(batch)
        ended = "its end time" if end_ns is not None else f"the end of {source}"
        yield FeedStatus(
            FeedState.ENDED,
            f"replay reached {ended}",
            end_ns if end_ns is not None else reached_ns,
            time.time_ns(),
        )

    def _read_reference(self) -> pa.Table:
        if self.files.reference is None:
            return SPECS[FileKind.REFERENCE].schema.empty_table()
        return read_reference(self.files.reference, self._limits)

    def _day_start_ns(self, start_ns: int) -> int:
        try:
            return self._calendar.session(self._calendar.trading_day(start_ns)).pre_open_ns
        except NotASessionError as exc:
            raise FeedError(f"cannot replay from {utc_text(start_ns)}: {exc}") from exc

    def _indexed(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each batch with the universe row of its symbols (every file symbol is in it)."""
        for batch in batches:
            rows = pc.cast(pc.index_in(batch.column("symbol"), value_set=self._symbols), pa.int32())
            yield pa.record_batch(
                [*batch.columns, rows], names=[*batch.schema.names, "symbol_index"]
            )


def _days(days: Sequence[dt.date]) -> str:
    """Trading days for a message: all of them when few, else the first and last few."""
    shown = [day.isoformat() for day in days]
    if len(shown) > SHOWN_DAYS:
        half = SHOWN_DAYS // 2
        shown = [*shown[:half], "...", *shown[-half:]]
    return f"{len(days)} session{'s' if len(days) != 1 else ''}: {', '.join(shown)}"


def _universe(summary: ReplaySummary) -> Universe:
    """The reference file's symbols in its order, then symbols only the bar files have, sorted."""
    listed = () if summary.reference is None else summary.reference.symbols
    known = set(listed)
    seen = {*summary.minute_bars.symbols, *summary.daily_bars.symbols}
    return Universe([*listed, *sorted(seen - known)])


def _aligned(reference: pa.Table, symbols: pa.Array) -> pa.Table:
    """The reference extended with null rows for the universe symbols it lacks.

    The universe starts with the reference symbols in file order, so appending the rest in
    universe order lines every row up with its universe row.
    """
    missing = symbols.slice(reference.num_rows)
    schema = SPECS[FileKind.REFERENCE].schema
    blanks = {f.name: pa.nulls(len(missing), f.type) for f in schema if f.name != "symbol"}
    extra = pa.table({"symbol": missing, **blanks}, schema=schema)
    return pa.concat_tables([reference, extra])


def _aggregate(group: pa.Table) -> AggregateBatch:
    """One minute's bars as a batch, in universe order like the live feeds."""
    rows = group.column("symbol_index").to_numpy()
    order = np.argsort(rows, kind="stable")

    def column(name: str, dtype: type[S]) -> npt.NDArray[S]:
        return np.asarray(group.column(name).to_numpy()[order], dtype=dtype)

    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=column("symbol_index", np.int32),
        start_ns=column("start_ns", np.int64),
        open=column("open", np.float64),
        high=column("high", np.float64),
        low=column("low", np.float64),
        close=column("close", np.float64),
        volume=column("volume", np.int64),
        vwap=column("vwap", np.float64),
        trades=column("trades", np.int32),
    )


async def _next_in_thread(items: Iterator[T]) -> T | None:
    """The next item, fetched on a worker thread: DuckDB's sort and reads block."""
    future = asyncio.get_running_loop().run_in_executor(None, next, items, None)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The fetch goes on in its thread; let it finish before the reader closes under it.
        await asyncio.wait([future])
        raise
