"""Composition root: builds one tapescan process from its settings and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator

import uvicorn

from tapescan.api.app import create_app
from tapescan.config import ConfigError, Settings
from tapescan.feeds.base import Feed
from tapescan.feeds.monitor import FeedMonitor
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import MarketCalendar, datetime_to_ns, et_to_ns, market_calendar
from tapescan.market.clock import make_clock
from tapescan.model import AggregateBatch, FeedState, FeedStatus, HaltEvent
from tapescan.ops.memory import release_free_memory
from tapescan.scan.library import builtin_scans, load_user_scans, merge
from tapescan.scan.scanner import Scanner, ScanStats, text_columns
from tapescan.state.market_state import MarketState
from tapescan.tasks import TaskGroup

log = logging.getLogger(__name__)
SIM_DEFAULT_START = dt.time(9, 25)


def build_feed(settings: Settings, calendar: MarketCalendar) -> Feed:
    if settings.feed == "sim":
        market = SimMarket(settings.sim_seed, settings.sim_symbols, calendar)
        return SimFeed(market, second_aggregates=settings.sim_second_aggregates)
    if settings.feed == "replay":
        from tapescan.feeds.replay.feed import ReplayFeed  # noqa: PLC0415 - DuckDB only when used

        if settings.bars is None or settings.daily is None:
            raise ConfigError("feed 'replay' needs --bars and --daily")
        return ReplayFeed.open(settings.bars, settings.daily, settings.reference, calendar)
    raise ConfigError("feed 'massive' is not available yet; use --feed sim or --feed replay")


def choose_start(
    settings: Settings, calendar: MarketCalendar, feed: Feed, now_ns: int
) -> int | None:
    """The simulated start instant, or None to run on wall time."""
    if settings.start is not None:
        return datetime_to_ns(settings.start)
    first_session = getattr(feed, "first_session", None)
    if callable(first_session):
        session: dt.date = first_session()
        return calendar.session(session).pre_open_ns
    if calendar.session_in_progress(now_ns) is not None:
        return None if settings.speed == 1.0 else now_ns
    return et_to_ns(calendar.trading_day(now_ns), SIM_DEFAULT_START)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def first_session(calendar: MarketCalendar, start_ns: int) -> dt.date:
    """The session a process starting at ``start_ns`` trades first (after 20:00: the next)."""
    session = calendar.trading_day(start_ns)
    if start_ns >= calendar.session(session).post_close_ns:
        session = calendar.next_session(session)
    return session


class Node:
    def __init__(self, settings: Settings, calendar: MarketCalendar | None = None) -> None:
        self.settings = settings
        self.calendar = calendar or market_calendar()
        self.feed = build_feed(settings, self.calendar)
        start_ns = choose_start(settings, self.calendar, self.feed, time.time_ns())
        self.clock = make_clock(start_ns, settings.speed)
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.session = first_session(self.calendar, self.start_ns)
        self.monitor = FeedMonitor(self.feed.name)
        self.started_ns = time.monotonic_ns()
        reference = self.feed.reference()
        self.state = MarketState(self.feed.universe, self.calendar, self.session)
        self.state.load_reference(reference)
        scans = merge(
            builtin_scans(), load_user_scans(settings.scans_file) if settings.scans_file else []
        )
        self.scanner = Scanner(self.state, scans, text_columns(self.feed.universe, reference))
        self.stats = ScanStats()
        self.app = create_app(self)
        self.tasks = TaskGroup()

    def _warmup_step(self, done: int, total: int) -> None:
        self.stats.warmup_done, self.stats.warmup_total = done, total

    async def _consume_feed(self) -> None:
        try:
            # Warm-up history can take seconds to build; the server answers meanwhile.
            warmup = await asyncio.to_thread(self.feed.warmup, self.session, self._warmup_step)
            self.state.load_warmup(warmup)
            del warmup
            release_free_memory()
            self.stats.warmed_up = True
            async for event in self.feed.events(self.clock, self.start_ns):
                if isinstance(event, AggregateBatch):
                    self.state.apply(event)
                elif isinstance(event, HaltEvent):
                    self.state.apply_halt(event)
                self.monitor.observe(event, self.clock.now_ns())
        except Exception as error:
            self.monitor.observe(FeedStatus(FeedState.FAILED, str(error), self.clock.now_ns()), 0)
            raise

    async def _scan_loop(self) -> None:
        interval = self.settings.scan_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self.stats.warmed_up:
                continue
            self.state.advance_to(max(self.state.now_ns, self.clock.now_ns()))
            began = time.perf_counter_ns()
            output = self.scanner.cycle()
            self.stats.cycles += 1
            self.stats.deltas += len(output.deltas)
            self.stats.last_cycle_ms = (time.perf_counter_ns() - began) / 1e6

    async def run(self, stop: asyncio.Event) -> None:
        """Serve and consume the feed until ``stop`` is set or a task fails."""
        server = _Server(
            uvicorn.Config(
                self.app,
                host=self.settings.host,
                port=self.settings.port,
                log_level=self.settings.log_level,
                lifespan="off",
            )
        )
        self.tasks.start(self._consume_feed(), name="feed")
        self.tasks.start(self._scan_loop(), name="scan")
        serving = self.tasks.start(server.serve(), name="http")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({stopper, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(serving), self.settings.shutdown_timeout_s)
        stuck = await self.tasks.stop(self.settings.shutdown_timeout_s / 2)
        if stuck:
            log.warning("tasks still running at shutdown: %s", ", ".join(stuck))
