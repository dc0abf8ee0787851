"""Minute bars the socket did not deliver, from REST: today's bars at a start, a reconnect's gap.

A gap is the minutes [from_ns, to_ns) of one session:

- at a start during a session, from 04:00 ET (or from the end of the bars a restart recovered
  from the store) to the minute the socket went live;
- after a drop, from the minute before the socket stopped being live (its ``AM`` bar may have
  been on the wire) to the minute it was live again.

The minute in progress when the socket goes live is never requested: its ``AM`` bar comes from
the socket whole when it ends and supersedes the seconds that came before it (when ``AM`` is not
subscribed, the gap takes that minute too, once it has ended). Every ticker's minute aggregates
of the gap are requested, one request each, ``REQUEST_THREADS`` in flight; bars are kept only
when they start inside the gap, and are handed on as minute batches of ``BATCH_TICKERS`` tickers.
An overlap with what the socket delivered is harmless: ingest is an upsert, so a bar that did
arrive is replaced by the same bar (or by its correction).

Memory: at most ``QUEUED_BATCHES`` batches wait for the consumer, each at most
``BATCH_TICKERS`` x 960 minutes x 64 B (~3 MB), plus ``REQUEST_THREADS * 4`` answers in flight
(a day of one ticker's bars is ~100 KB of JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from tapescan.feeds.massive.client import MassiveFatalError
from tapescan.feeds.massive.rest import (
    REQUEST_THREADS,
    MassiveRest,
    MassiveRestError,
    RestInterruptedError,
    in_order,
)
from tapescan.feeds.massive.snapshot import active_rows
from tapescan.market.calendar import MarketCalendar, ns_to_et
from tapescan.model import NS_PER_MINUTE, AggregateBatch, AggregateKind, Universe

log = logging.getLogger(__name__)

BATCH_TICKERS = 50  # tickers per minute batch handed on
QUEUED_BATCHES = 2  # batches waiting for the consumer before the requests pause
PROGRESS_EVERY = 100  # tickers between progress reports
NS_PER_MS = 1_000_000
SESSION_NS = 16 * 60 * NS_PER_MINUTE  # 04:00-20:00 ET: gaps this close are of one session
RESULTS_LIMIT = "50000"  # the endpoint's maximum; a session has at most 960 minutes


@dataclass(frozen=True, slots=True)
class Gap:
    """Minutes [from_ns, to_ns) to take from REST, requested once ``not_before_ns`` has come."""

    from_ns: int
    to_ns: int
    reason: str  # "start" or "reconnect"
    not_before_ns: int = 0

    def describe(self) -> str:
        first, end = ns_to_et(self.from_ns), ns_to_et(self.to_ns)
        return f"{first:%H:%M}-{end:%H:%M} ET"


@dataclass(frozen=True, slots=True)
class Progress:
    gap: Gap
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class GapDone:
    gap: Gap
    bars: int
    requests: int
    seconds: float
    error: str | None = None  # the gap is (partly) missing: why


BackfillItem = AggregateBatch | Progress | GapDone


def start_gap(
    calendar: MarketCalendar, live_ns: int, resume_ns: int | None, minute_bars_live: bool
) -> Gap | None:
    """Today's minutes before the socket went live at ``live_ns`` (None outside a session)."""
    times = calendar.session_in_progress(live_ns)
    if times is None:
        return None
    first = times.pre_open_ns
    if resume_ns is not None and resume_ns > first:
        first = resume_ns - resume_ns % NS_PER_MINUTE  # the stored bars end on a minute
    return _gap(first, live_ns, times.post_close_ns, "start", minute_bars_live)


def reconnect_gap(
    calendar: MarketCalendar, left_ns: int, live_ns: int, minute_bars_live: bool
) -> Gap | None:
    """The minutes a drop at ``left_ns`` may have lost, until live again at ``live_ns``."""
    times = calendar.session_in_progress(live_ns) or calendar.session_in_progress(left_ns)
    if times is None:
        return None
    first = max(times.pre_open_ns, left_ns - left_ns % NS_PER_MINUTE - NS_PER_MINUTE)
    return _gap(first, live_ns, times.post_close_ns, "reconnect", minute_bars_live)


def _gap(first: int, live_ns: int, session_end_ns: int, reason: str, am: bool) -> Gap | None:
    end = live_ns - live_ns % NS_PER_MINUTE
    not_before = 0
    if not am:  # no AM bar will complete the live minute: take it from REST once it has ended
        end += NS_PER_MINUTE
        not_before = end + 2 * 10**9
    end = min(end, session_end_ns)
    if end <= first:
        return None
    return Gap(first, end, reason, not_before)


@dataclass(slots=True)
class Handover:
    """Where REST's minutes end and the socket's must begin, each time the socket goes live.

    The gap asked of REST ends at the minute the socket went live by this machine's clock; the
    socket brings that minute's ``AM`` bars when it ends. A server whose clock is ahead (a
    local clock late by a second, or a fake run at 60x) may have sent them before the
    subscription: the socket's first minute bars then start a minute later, and the minutes
    between are a hole, asked of REST too (``hole``).
    """

    from_ns: int | None = None
    reason: str = "start"
    session_end_ns: int = 0  # the session's end (20:00 ET): a hole never reaches past it

    def expect(self, from_ns: int, reason: str, session_end_ns: int) -> None:
        self.from_ns, self.reason, self.session_end_ns = from_ns, reason, session_end_ns

    def overdue(self, now_ns: int) -> Gap | None:
        """The session ended (and its last minute's bars would have come) with no minute bar
        from the socket since the handover: the minutes from it to the session's end."""
        if self.from_ns is None or now_ns < self.session_end_ns + 2 * NS_PER_MINUTE:
            return None
        gap = Gap(self.from_ns, self.session_end_ns, self.reason)
        self.from_ns = None
        return gap if gap.to_ns > gap.from_ns else None

    def hole(self, starts: npt.NDArray[np.int64]) -> Gap | None:
        """After a minute batch from the socket: the minutes between the handover and its
        first bar at or after it, within the session (None: none missing, or no handover
        pending)."""
        if self.from_ns is None:
            return None
        newer = starts[starts >= self.from_ns]
        if not len(newer):
            return None  # corrections of earlier minutes: the handover's minute is still to come
        first = min(int(newer.min()), self.session_end_ns)  # the next day's bars: to 20:00
        gap = Gap(self.from_ns, first, self.reason) if first > self.from_ns else None
        self.from_ns = None
        return gap


def queue(gaps: deque[Gap], gap: Gap) -> None:
    """Add ``gap`` to the gaps waiting; one that reaches the last waiting gap (a socket that
    drops again before the backfill has begun on it) joins it, so that drops in a loop wait as
    one gap, not one each: the queue holds at most one gap per session."""
    if gaps and gap.from_ns <= gaps[-1].to_ns + SESSION_NS and gap.reason == gaps[-1].reason:
        last = gaps.pop()
        gap = Gap(
            min(last.from_ns, gap.from_ns),
            max(last.to_ns, gap.to_ns),
            gap.reason,
            max(last.not_before_ns, gap.not_before_ns),
        )
    gaps.append(gap)


def gap_bars(
    rest: MassiveRest,
    pool: ThreadPoolExecutor,
    universe: Universe,
    gap: Gap,
    emit: Callable[[BackfillItem], None],
    stop: threading.Event,
    asked: Sequence[int] | None = None,
) -> tuple[int, int]:
    """The minute bars of ``gap`` of every ticker (of the universe rows ``asked``, in order,
    when given) to ``emit``, ``BATCH_TICKERS`` tickers a batch; returns (bars, requests). Ends
    early, without error, once ``stop`` is set."""
    symbols = universe.symbols
    last_ms = (gap.to_ns - NS_PER_MINUTE) // NS_PER_MS  # the gap's last minute, inclusive
    path = f"/range/1/minute/{gap.from_ns // NS_PER_MS}/{last_ms}"
    params = {"adjusted": "true", "sort": "asc", "limit": RESULTS_LIMIT}
    wanted = range(len(symbols)) if asked is None else asked

    def fetch(row: int) -> _Bars:
        url = f"/v2/aggs/ticker/{quote(symbols[row], safe='')}{path}"
        return _fetch(rest, url, params, gap, row)

    parts: list[_Bars] = []
    bars = done = 0
    with contextlib.closing(in_order(pool, wanted, fetch)) as answers:
        for _, answer in answers:
            if stop.is_set():
                answer.cancel()  # the one handed out; closing cancels those queued behind
                break
            part = answer.result()
            done += 1
            if len(part.start_ns):
                parts.append(part)
            last = done == len(wanted)
            if done % BATCH_TICKERS == 0 or last:
                batch = _batch(parts)
                parts = []
                if batch is not None:
                    bars += len(batch)
                    emit(batch)
            if done % PROGRESS_EVERY == 0 or last:
                emit(Progress(gap, done, len(wanted)))
    return bars, done


@dataclass(frozen=True, slots=True)
class _Bars:
    """One ticker's bars of a gap, as arrays."""

    row: int
    start_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # (bars, 7): open, high, low, close, volume, vwap, trades


def _fetch(rest: MassiveRest, url: str, params: dict[str, str], gap: Gap, row: int) -> _Bars:
    body = rest.get(url, params)
    starts: list[int] = []
    values: list[tuple[float, ...]] = []
    for bar in _results(body):
        try:
            start = int(bar["t"]) * NS_PER_MS
            o, h, low, c, v = (float(bar[k]) for k in ("o", "h", "l", "c", "v"))
            vw = float(bar.get("vw", c))
            n = float(bar.get("n", 0))
        except (KeyError, TypeError, ValueError):
            continue  # the state refuses what is left of a bad bar; this one has no shape
        if gap.from_ns <= start < gap.to_ns:
            starts.append(start)
            values.append((o, h, low, c, v, vw, n))
    return _Bars(
        row, np.array(starts, dtype=np.int64), np.array(values, dtype=np.float64).reshape(-1, 7)
    )


def _results(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    results = body.get("results")
    if isinstance(results, list):
        for bar in results:
            if isinstance(bar, dict):
                yield bar


def _batch(parts: list[_Bars]) -> AggregateBatch | None:
    if not parts:
        return None
    values = np.concatenate([p.values for p in parts])
    volume = values[:, 4]
    finite = np.isfinite(values).all(axis=1) & (volume >= 0) & (volume < 2**62)
    rows = np.concatenate([np.full(len(p.start_ns), p.row, dtype=np.int32) for p in parts])
    starts = np.concatenate([p.start_ns for p in parts])
    values, rows, starts = values[finite], rows[finite], starts[finite]
    if not len(rows):
        return None
    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=rows,
        start_ns=starts,
        open=np.ascontiguousarray(values[:, 0]),
        high=np.ascontiguousarray(values[:, 1]),
        low=np.ascontiguousarray(values[:, 2]),
        close=np.ascontiguousarray(values[:, 3]),
        volume=np.round(values[:, 4]).astype(np.int64),
        vwap=np.ascontiguousarray(values[:, 5]),
        trades=np.minimum(values[:, 6], 2**31 - 1).astype(np.int32),
        ts_init_ns=time.time_ns(),
    )


@dataclass(slots=True)
class BackfillCounters:
    gaps: int = 0
    requests: int = 0
    bars: int = 0
    seconds: float = 0.0
    failed: int = 0
    quiet: int = 0  # tickers not asked: the snapshot showed no trade since the gap began
    snapshot_failures: int = 0  # snapshots that could not be had (every ticker was asked)
    running: str | None = None  # the gap being filled and how far
    last: dict[str, Any] | None = None  # the latest gap filled

    def as_dict(self) -> dict[str, Any]:
        return {
            "gaps": self.gaps,
            "requests": self.requests,
            "bars": self.bars,
            "seconds": round(self.seconds, 3),
            "failed": self.failed,
            "quiet": self.quiet,
            "snapshot_failures": self.snapshot_failures,
            "running": self.running,
            "last": self.last,
        }


@dataclass(eq=False)
class Backfiller:
    """Fills gaps one after the other in a worker thread; ``next`` hands out what it got."""

    open_rest: Callable[[], MassiveRest]
    universe: Universe
    now_ns: Callable[[], int]
    counters: BackfillCounters = field(default_factory=BackfillCounters)
    _gaps: deque[Gap] = field(default_factory=deque)
    _items: asyncio.Queue[BackfillItem] = field(default_factory=asyncio.Queue)
    _room: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(QUEUED_BATCHES))
    _stop: threading.Event = field(default_factory=threading.Event)
    _task: asyncio.Task[None] | None = None

    def request(self, gap: Gap) -> None:
        queue(self._gaps, gap)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._fill(), name="massive-backfill")

    async def next(self) -> BackfillItem:
        item = await self._items.get()
        if isinstance(item, AggregateBatch):
            self._room.release()
        return item

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()

        def emit(item: BackfillItem) -> None:  # in the worker thread
            if isinstance(item, AggregateBatch):
                while not self._room.acquire(timeout=0.25):
                    if self._stop.is_set():
                        return
            loop.call_soon_threadsafe(self._items.put_nowait, item)
            if isinstance(item, Progress):
                self.counters.running = (
                    f"{item.gap.reason} {item.gap.describe()}: {item.done} of {item.total} tickers"
                )

        while self._gaps:
            gap = self._gaps.popleft()
            wait_s = (gap.not_before_ns - self.now_ns()) / 1e9
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            self.counters.running = f"{gap.reason} {gap.describe()}"
            began = time.monotonic()
            error: str | None = None
            bars = requests = 0
            try:
                bars, requests = await asyncio.to_thread(self._fill_gap, gap, emit)
            except Exception as failure:  # REST down: the gap stays missing, and says so
                error = next(iter(str(failure).splitlines()), type(failure).__name__)
                log.warning("backfill of %s %s failed: %s", gap.reason, gap.describe(), error)
                self.counters.failed += 1
            seconds = time.monotonic() - began
            counters = self.counters
            counters.gaps += 1
            counters.bars += bars
            counters.requests += requests
            counters.seconds += seconds
            counters.running = None
            counters.last = {
                "reason": gap.reason,
                "minutes": gap.describe(),
                "bars": bars,
                "requests": requests,
                "seconds": round(seconds, 3),
                "error": error,
            }
            await self._items.put(GapDone(gap, bars, requests, seconds, error))

    def _fill_gap(self, gap: Gap, emit: Callable[[BackfillItem], None]) -> tuple[int, int]:
        with (
            self.open_rest() as rest,
            ThreadPoolExecutor(REQUEST_THREADS, "massive-backfill") as pool,
        ):
            asked = self._active(rest, gap)
            bars, requests = gap_bars(rest, pool, self.universe, gap, emit, self._stop, asked)
            return bars, requests + 1  # the snapshot's

    def _active(self, rest: MassiveRest, gap: Gap) -> list[int] | None:
        """The rows of the tickers the full-market snapshot shows active since the gap began
        (None: the snapshot failed, every ticker is asked)."""
        try:
            rows = active_rows(rest, self.universe, gap.from_ns)
        except RestInterruptedError:
            raise
        except (MassiveRestError, MassiveFatalError) as error:  # 403: a plan without it
            self.counters.snapshot_failures += 1
            log.warning("full-market snapshot failed, asking every ticker: %s", error)
            return None
        self.counters.quiet += len(self.universe) - len(rows)
        return [int(row) for row in rows]
