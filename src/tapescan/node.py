"""Composition root: builds one tapescan process from its settings and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import uvicorn

from tapescan.api.app import create_app
from tapescan.api.ws_transport import DirectWebSocketProtocol
from tapescan.config import ConfigError, Settings
from tapescan.feeds.base import Feed
from tapescan.feeds.monitor import FeedMonitor
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.indicators.compute import compute_columns
from tapescan.market.calendar import MarketCalendar, datetime_to_ns, et_to_ns, market_calendar
from tapescan.market.clock import make_clock
from tapescan.model import FeedState, FeedStatus
from tapescan.ops.memory import release_free_memory
from tapescan.publish.frames import Frame, iso
from tapescan.publish.hub import FanoutLimits, Hub
from tapescan.replay_until import symbol_values
from tapescan.scan.definition import ScanDefinition
from tapescan.scan.delta import Snapshot
from tapescan.scan.registry import ScanRegistry
from tapescan.scan.scanner import Scanner, ScanStats, text_columns
from tapescan.state.market_state import MarketState
from tapescan.tasks import TaskGroup

log = logging.getLogger(__name__)
SIM_DEFAULT_START = dt.time(9, 25)
STATUS_EVERY_S = 2.0


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
        self.universe = self.feed.universe
        self.registry = ScanRegistry(settings.scans_file, settings.data_dir / "user_scans.json")
        self.scanner = Scanner(
            self.state, self.registry.definitions(), text_columns(self.universe, reference)
        )
        self.registry.on_change(self._scans_changed)
        self.hub = Hub(
            self._snapshot_of,
            FanoutLimits(
                settings.ws_queue_frames, settings.ws_lag_timeout_s, settings.ws_buffer_bytes
            ),
        )
        self.stats = ScanStats()
        self._columns: dict[str, np.ndarray] | None = None
        self._text = text_columns(self.universe, reference)
        self._last_status: tuple[str, str, str] | None = None
        self._last_status_at = 0.0
        self.app = create_app(self)
        self.tasks = TaskGroup()

    def _snapshot_of(self, scan_id: str) -> Snapshot | None:
        if scan_id not in self.scanner.trackers:
            return None
        return self.scanner.snapshot(scan_id)

    def _scans_changed(
        self, definitions: Sequence[ScanDefinition], changed: list[str], deleted: list[str]
    ) -> None:
        self.scanner.replace_scans(definitions)
        if self.stats.warmed_up:
            self._cycle()
        self.hub.scans_replaced(changed, deleted)

    def symbol_values(self, row: int) -> dict[str, Any]:
        columns = self._columns if self._columns is not None else compute_columns(self.state)
        return symbol_values(columns, self._text, row)

    def status_frame(self) -> Frame:
        return Frame.of(self._status_message())

    def _status_message(self) -> dict[str, Any]:
        now = self.clock.now_ns()
        return {
            "type": "status",
            "asof": iso(now),
            "session": {
                "date": self.calendar.trading_day(now).isoformat(),
                "phase": self.calendar.phase(now).value,
            },
            "feed": {
                "name": self.monitor.name,
                "state": self.monitor.state.value,
                "lag_ms": round(self.monitor.last_lag_ns / 1e6, 3),
            },
            "clock": {"speed": self.clock.speed},
            "scans": {
                "cycles": self.stats.cycles,
                "last_cycle_ms": round(self.stats.last_cycle_ms, 3),
            },
        }

    def _cycle(self) -> None:
        began = time.perf_counter_ns()
        output = self.scanner.cycle()
        self._columns = output.columns
        self.stats.cycles += 1
        self.stats.deltas += len(output.deltas)
        self.stats.last_cycle_ms = (time.perf_counter_ns() - began) / 1e6
        self.hub.publish(output.deltas, time.time_ns() if self.settings.ws_stamp_frames else None)
        status = self._status_message()
        key = (status["session"]["phase"], status["feed"]["state"], status["session"]["date"])
        if key != self._last_status or time.monotonic() - self._last_status_at >= STATUS_EVERY_S:
            self._last_status, self._last_status_at = key, time.monotonic()
            self.hub.broadcast(Frame.of(status))

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
                self.state.apply_event(event)
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
            self._cycle()

    async def _drop_laggards(self) -> None:
        """Close clients that stayed behind past the lag timeout (close code 1013)."""
        while True:
            await asyncio.sleep(0.2)
            self.hub.service()
            for client in self.hub.lagging_too_long():
                log.info("disconnecting WebSocket client %d: behind for too long", client.id)
                self.hub.disconnect(client)
                client.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve and consume the feed until ``stop`` is set or a task fails."""
        server = _Server(
            uvicorn.Config(
                self.app,
                host=self.settings.host,
                port=self.settings.port,
                log_level=self.settings.log_level,
                lifespan="off",
                ws=DirectWebSocketProtocol,
                ws_per_message_deflate=False,  # frames are pre-framed once for every client
                ws_ping_interval=20.0,
                ws_ping_timeout=20.0,
                ws_max_size=1 << 20,  # frames over 64 KiB get an error; over 1 MiB a close
            )
        )
        self.tasks.start(self._consume_feed(), name="feed")
        self.tasks.start(self._scan_loop(), name="scan")
        self.tasks.start(self._drop_laggards(), name="websocket-laggards")
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
