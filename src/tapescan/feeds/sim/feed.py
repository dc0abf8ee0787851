"""The simulated market as a live feed: per-second and per-minute aggregates, halts and LULD
bands (feeds/sim/bands.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterator

import numpy as np
import pyarrow as pa

from tapescan.feeds.base import StepCallback
from tapescan.feeds.history import (
    DAILY_HISTORY_SESSIONS,
    MINUTE_HISTORY_SESSIONS,
    DailyAccumulator,
    Warmup,
    WarmupSession,
)
from tapescan.feeds.sim.bands import BandPublisher
from tapescan.feeds.sim.generator import SimMarket
from tapescan.feeds.sim.intraday import CHUNK_MINUTES, DayPath, MinuteChunk
from tapescan.feeds.sim.plan import HALT_MINUTES
from tapescan.feeds.sim.seconds import split_minute
from tapescan.market.clock import Clock
from tapescan.model import (
    NS_PER_MINUTE,
    FeedEvent,
    FeedState,
    FeedStatus,
    HaltEvent,
    Universe,
    stamped,
)
from tapescan.ops.memory import release_free_memory

SECOND_STREAM = 0x5EED_0006


class SimFeed:
    """Emits the simulated market at the clock's pace, session after session."""

    def __init__(self, market: SimMarket, second_aggregates: bool = True) -> None:
        self._market = market
        self._second_aggregates = second_aggregates

    @property
    def name(self) -> str:
        return "sim"

    @property
    def universe(self) -> Universe:
        return self._market.universe

    def details(
        self, session: dt.date, stored: pa.Table, on_step: StepCallback | None = None
    ) -> None:
        """None: the simulated universe holds every detail."""
        return None

    def reference(self) -> pa.Table:
        return self._market.reference_table()

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
        """Daily bars of the 40 sessions before ``session`` and slot volume of the last 10
        (``only`` those of them, when given).

        The last 10 sessions are simulated minute by minute, so their daily bars are the
        aggregates of the minutes that a replay of the same dates would see. Each is drawn
        when the warm-up is read that far (one session's slot volume in memory at a time).
        """
        return Warmup(session, self._warmup_sessions(session, on_step, only))

    def _warmup_sessions(
        self, session: dt.date, on_step: StepCallback | None, only: Collection[dt.date] | None
    ) -> Iterator[WarmupSession]:
        calendar = self._market.calendar
        daily_sessions = calendar.previous_sessions(session, DAILY_HISTORY_SESSIONS)
        minute_sessions = daily_sessions[-MINUTE_HISTORY_SESSIONS:]
        modelled = daily_sessions[:-MINUTE_HISTORY_SESSIONS]
        if only is not None:
            minute_sessions = [day for day in minute_sessions if day in only]
            modelled = [day for day in modelled if day in only]
        # a step per modelled session and per 30-minute chunk of each simulated one
        total = len(modelled) + sum(
            calendar.session(day).extended_minutes // CHUNK_MINUTES for day in minute_sessions
        )
        done = 0
        if on_step is not None:  # the chain's first walk: (0, total) now and then
            self._market.walk_to(daily_sessions[0], lambda: on_step(0, total))
        for day in modelled:
            yield WarmupSession(day, self._market.modelled_daily_table(day))
            done += 1
            if on_step is not None:  # where a stop request is noticed
                on_step(done, total)
        for day in minute_sessions:
            path = self._market.day_path(day)
            accumulator = DailyAccumulator(len(self.universe), calendar.session(day))
            slots = self._market.empty_slots()
            for index in range(path.chunks):
                chunk = path.chunk(index)
                self._market.accumulate(accumulator, chunk)
                self._market.add_slot_volume(slots, chunk)
                del chunk
                done += 1
                if on_step is not None:  # ~0.1 s apart: also where a stop request is noticed
                    on_step(done, total)
            yield WarmupSession(day, self._market.daily_table(accumulator), slots)

    async def events(
        self, clock: Clock, start_ns: int, end_ns: int | None = None, resume_ns: int | None = None
    ) -> AsyncGenerator[FeedEvent, None]:
        calendar = self._market.calendar
        session = calendar.trading_day(start_ns)
        times = calendar.session(session)
        if start_ns >= times.post_close_ns:
            session = calendar.next_session(session)
        yield FeedStatus(
            FeedState.LIVE, f"simulated market from {session.isoformat()}", start_ns, time.time_ns()
        )
        while end_ns is None or calendar.session(session).pre_open_ns < end_ns:
            async for event in self._session_events(clock, session, start_ns, end_ns, resume_ns):
                yield event
            session = calendar.next_session(session)
        yield FeedStatus(
            FeedState.ENDED, "simulated market reached its end time", end_ns or 0, time.time_ns()
        )

    async def _session_events(
        self,
        clock: Clock,
        session: dt.date,
        start_ns: int,
        end_ns: int | None,
        resume_ns: int | None = None,
    ) -> AsyncIterator[FeedEvent]:
        market = self._market
        path = market.day_path(session)
        halt_start = path.plan.halt_start
        halted_rows = np.flatnonzero(halt_start >= 0)
        bands = BandPublisher(len(self.universe))
        republished = False
        regular_open, regular_close = (
            int(path.times.regular_open_ns),
            int(path.times.regular_close_ns),
        )
        for index in range(path.chunks):
            chunk_start = int(path.times.pre_open_ns) + index * CHUNK_MINUTES * NS_PER_MINUTE
            chunk_end = chunk_start + CHUNK_MINUTES * NS_PER_MINUTE
            chunk: MinuteChunk | None = None
            # a restart has the bars up to resume_ns; the regular session's are drawn anyway,
            # for the bands they move (a restart then has the bands an unbroken run would),
            # unless it resumes after the close, when bands are over for the day
            banded = chunk_end > regular_open and chunk_start < regular_close
            banded &= resume_ns is None or resume_ns < regular_close
            if resume_ns is None or chunk_end > resume_ns or banded:
                # Drawing 30 minutes of the market takes ~0.1 s: off the event loop, and always
                # in a worker thread, whose freed draws the next draw reuses.
                chunk = await asyncio.to_thread(_drawn, path, index)
            for minute in range(CHUNK_MINUTES):
                minute_start = chunk_start + minute * NS_PER_MINUTE
                if end_ns is not None and minute_start + NS_PER_MINUTE > end_ns:
                    return
                catching_up = minute_start + NS_PER_MINUTE <= start_ns
                recovered = resume_ns is not None and minute_start + NS_PER_MINUTE <= resume_ns
                for event in self._halts(
                    path.pre_minutes,
                    index * CHUNK_MINUTES + minute,
                    minute_start,
                    halted_rows,
                    halt_start,
                ):
                    if not catching_up:
                        await clock.sleep_until(event.ts_event_ns)
                    yield event
                if chunk is None:
                    continue
                regular = regular_open <= minute_start < regular_close
                if recovered:
                    if regular:
                        if minute_start == regular_open:
                            bands.reset()
                        bands.after_minute(market.minute_batch(chunk, minute))
                    continue
                if resume_ns is not None and not republished and resume_ns < regular_close:
                    republished = True  # the bands as of the restart, as Massive republishes
                    if bands.published_any():
                        current = bands.current(resume_ns)
                        yield dataclasses.replace(current, ts_init_ns=time.time_ns())
                if self._second_aggregates and not catching_up:
                    async for batch in self._seconds(clock, path.plan.ordinal, chunk, minute):
                        yield batch
                batch = market.minute_batch(chunk, minute)
                if not catching_up:
                    await clock.sleep_until(batch.ts_event_ns or minute_start + NS_PER_MINUTE)
                yield stamped(batch)
                if minute_start == regular_open:
                    bands.reset()
                if regular:
                    published = bands.after_minute(batch)
                    if published is not None:
                        yield dataclasses.replace(published, ts_init_ns=time.time_ns())
                del batch
            del chunk  # before the next draw: one chunk (20 MB at 11,882 symbols) at a time

    def _halts(
        self,
        pre_minutes: int,
        minute: int,
        minute_start: int,
        rows: np.ndarray,
        halt_start: np.ndarray,
    ) -> list[HaltEvent]:
        tau = minute - pre_minutes
        events = []
        for row in rows:
            if halt_start[row] == tau:
                events.append(HaltEvent(int(row), True, "LULD pause", minute_start, time.time_ns()))
            elif halt_start[row] + HALT_MINUTES == tau:
                events.append(
                    HaltEvent(int(row), False, "LULD pause", minute_start, time.time_ns())
                )
        return events

    async def _seconds(
        self, clock: Clock, ordinal: int, chunk: MinuteChunk, minute: int
    ) -> AsyncIterator[FeedEvent]:
        bars = self._market.minute_batch(chunk, minute)
        rng = np.random.default_rng(
            [self._market.seed, ordinal, chunk.first_minute + minute, SECOND_STREAM]
        )
        # Splitting a minute of the whole market takes tens of ms: keep the loop responsive.
        batches = await asyncio.to_thread(
            split_minute,
            int(chunk.start_ns[minute]),
            bars.symbol_index,
            bars.open,
            bars.high,
            bars.low,
            bars.close,
            bars.vwap,
            bars.volume,
            bars.trades.astype(np.int64),
            rng,
        )
        for batch in batches:
            await clock.sleep_until(batch.ts_event_ns)
            yield stamped(batch)


def _drawn(path: DayPath, index: int) -> MinuteChunk:
    """Chunk ``index`` of ``path``; the draw's temporaries (~7 MB) go back to the OS at once
    rather than stack under the next minute's per-second split."""
    chunk = path.chunk(index)
    release_free_memory()
    return chunk
