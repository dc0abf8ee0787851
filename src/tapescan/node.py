"""Composition root: builds one tapescan process from its settings and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import uvicorn

from tapescan.api.app import create_app
from tapescan.api.server_config import server_config
from tapescan.config import ConfigError, Settings
from tapescan.feeds.base import Feed
from tapescan.feeds.history import WarmupSession
from tapescan.feeds.monitor import FeedMonitor
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.indicators.compute import compute_columns
from tapescan.market.calendar import (
    MarketCalendar,
    datetime_to_ns,
    et_to_ns,
    market_calendar,
)
from tapescan.market.clock import Clock, make_clock
from tapescan.model import (
    NS_PER_MINUTE,
    AggregateBatch,
    AggregateKind,
    FeedEvent,
    FeedState,
    FeedStatus,
)
from tapescan.ops.gc_pauses import GcPauses
from tapescan.ops.memory import release_free_memory
from tapescan.publish.frames import Frame, iso
from tapescan.publish.hub import FanoutLimits, Hub
from tapescan.replay_until import symbol_values
from tapescan.scan.definition import ScanDefinition
from tapescan.scan.delta import Snapshot
from tapescan.scan.grid import CycleGrid
from tapescan.scan.registry import ScanRegistry
from tapescan.scan.scanner import Scanner, ScanStats, text_columns
from tapescan.state.market_state import MarketState, SessionSummary
from tapescan.store.archive import Archive
from tapescan.store.base import Store
from tapescan.store.history import History
from tapescan.store.keyframes import KeyframeSchedule
from tapescan.store.open import open_store
from tapescan.store.recorder import Recorder, RecorderLimits
from tapescan.store.records import daily_bar_rows, minute_bar_rows, slot_volume_rows
from tapescan.store.retention import RetentionStep, retire
from tapescan.store.tables import DAILY_BARS, SYMBOLS, conform
from tapescan.store.warm import (
    last_sequences,
    stored_details,
    stored_history,
    today_from_store,
    warmup_from_store,
    with_fetched,
)
from tapescan.tasks import FatalError, TaskGroup

if TYPE_CHECKING:
    from tapescan.feeds.massive.feed import MassiveConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
SIM_DEFAULT_START = dt.time(9, 25)
STATUS_EVERY_S = 2.0
STATUS_WARMUP_S = 1.0  # status frames while warming up
STOP_CHECK_S = 0.25  # a wait in the warm-up thread checks for a stop request this often
CYCLE_GRACE_S = 0.02  # a live cycle runs this long after its grid instant: its bars are in


def build_feed(settings: Settings, calendar: MarketCalendar) -> Feed:
    if settings.feed == "sim":
        market = SimMarket(settings.sim_seed, settings.sim_symbols, calendar)
        return SimFeed(market, second_aggregates=settings.sim_second_aggregates)
    if settings.feed == "replay":
        from tapescan.feeds.replay.feed import ReplayFeed  # noqa: PLC0415 - DuckDB only when used

        if settings.bars is None or settings.daily is None:
            raise ConfigError("feed 'replay' needs --bars and --daily")
        return ReplayFeed.open(settings.bars, settings.daily, settings.reference, calendar)
    from tapescan.feeds.massive.feed import MassiveFeed  # noqa: PLC0415 - only when used

    return MassiveFeed.open(massive_config(settings), calendar)


DELAYED_WS_URL = "wss://delayed.massive.com/stocks"
KEY_VARIABLES = ("MASSIVE_API_KEY", "POLYGON_API_KEY")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def massive_config(settings: Settings) -> MassiveConfig:
    """Where and how to reach Massive; the key comes from the environment only."""
    from tapescan.feeds.massive.feed import MassiveConfig  # noqa: PLC0415

    local = all(
        urllib.parse.urlsplit(url).hostname in LOOPBACK_HOSTS
        for url in (settings.massive_ws_url, settings.massive_rest_url)
    )
    if settings.speed is None or (settings.speed != 1.0 and not local):
        # a faster clock is for `tapescan fake-massive --speed X` on this machine
        raise ConfigError(
            "feed 'massive' is live data: it runs at 1x (leave --speed out; only a fake "
            "Massive on 127.0.0.1 can run faster, with the same --speed as its own)"
        )
    if settings.speed != 1.0 and settings.start is None:
        raise ConfigError(
            "feed 'massive' with --speed needs --start: the fake's clock (its market status "
            "serverTime, docs/live.md), or the run's clock would not follow it"
        )
    key = next((os.environ[v].strip() for v in KEY_VARIABLES if os.environ.get(v, "").strip()), "")
    if not key:
        raise ConfigError(
            "feed 'massive' needs an API key: set MASSIVE_API_KEY (or POLYGON_API_KEY) in the "
            "environment (a plan with WebSocket access to stocks; see docs/live.md)"
        )
    ws_url = settings.massive_ws_url
    if settings.massive_delayed and "massive_ws_url" not in settings.model_fields_set:
        ws_url = DELAYED_WS_URL
    return MassiveConfig(
        api_key=key,
        ws_url=ws_url,
        rest_url=settings.massive_rest_url,
        channels=tuple(settings.massive_channels),
        ticker_types=tuple(settings.massive_ticker_types),
        stale_after_s=settings.massive_stale_s,
        coverage_file=settings.data_dir / "massive-coverage.json",
    )


def link_summary(connection: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the page's status bar says about a live feed's connection (None for the others):
    the socket's state, its reconnects and last error, the backfill running (~300 B)."""
    if connection is None:
        return None
    socket = connection.get("socket") or {}
    backfill = connection.get("backfill") or {}
    return {
        "socket": socket.get("state"),
        "reconnects": socket.get("reconnects", 0),
        "error": (socket.get("last_error") or "")[:120],
        "malformed": socket.get("malformed_frames", 0) + socket.get("malformed_messages", 0),
        "backfill": backfill.get("running"),
        "gaps": backfill.get("gaps", 0),
        "gaps_failed": backfill.get("failed", 0),
    }


def choose_start(
    settings: Settings, calendar: MarketCalendar, feed: Feed, now_ns: int
) -> int | None:
    """The simulated start instant, or None to run on wall time."""
    if settings.start is not None:
        return datetime_to_ns(settings.start)
    if settings.feed == "massive":  # a live feed runs on wall time, in a session or not
        return None
    first_session = getattr(feed, "first_session", None)
    if callable(first_session):
        session: dt.date = first_session()
        return calendar.session(session).pre_open_ns
    if calendar.session_in_progress(now_ns) is not None:
        return None if settings.speed == 1.0 else now_ns
    return et_to_ns(calendar.trading_day(now_ns), SIM_DEFAULT_START)


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """A stop request reached a worker thread (warm-up, retention): it ends at its next step."""


class WarmupError(FatalError):
    """Warm-up failed: the process ends with this one line."""


class CatchUpClock:
    """The node's clock as the feed sees it, telling when the feed has caught up.

    A feed delivers everything before its start instant at once and then waits for events to
    come due; the first wait for an instant still in the future is the end of the catch-up.
    """

    def __init__(self, clock: Clock, on_caught_up: Callable[[], None]) -> None:
        self._clock = clock
        self._on_caught_up: Callable[[], None] | None = on_caught_up

    @property
    def speed(self) -> float | None:
        return self._clock.speed

    def now_ns(self) -> int:
        return self._clock.now_ns()

    async def sleep_until(self, ts_ns: int) -> None:
        if self._on_caught_up is not None and ts_ns > self._clock.now_ns():
            callback, self._on_caught_up = self._on_caught_up, None
            callback()
        await self._clock.sleep_until(ts_ns)


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything slow starts (a taken port fails
    at once, with one line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


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


@dataclasses.dataclass(slots=True)
class Recovery:
    """Where this process's state came from at start (reported by /api/v1/health)."""

    warmup_source: str = ""  # "store", "feed", or "store and feed"
    warmup_feed_sessions: int = 0  # warm-up sessions the feed gave (of 40; 0 from the store)
    details_source: str = ""  # where the day's reference details came from (a live feed's)
    recovered_bars: int = 0
    resume_ns: int | None = None


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
        self.state = MarketState(
            self.feed.universe,
            self.calendar,
            self.session,
            rvol_ring_file=settings.data_dir / "rvol-ring.u32",
        )
        self.state.load_reference(reference)
        self.universe = self.feed.universe
        self.registry = ScanRegistry(settings.scans_file, settings.data_dir / "user_scans.json")
        # symbol, name, exchange, sector: one dict, shared with the scans (details replace it)
        self._text = text_columns(self.universe, reference)
        self.scanner = Scanner(self.state, self.registry.definitions(), self._text)
        self.registry.on_change(self._scans_changed)
        self.hub = Hub(
            self._snapshot_of,
            FanoutLimits(
                queue_frames=settings.ws_queue_frames,
                lag_timeout_s=settings.ws_lag_timeout_s,
                buffer_bytes=settings.ws_buffer_bytes,
                behind_s=settings.ws_behind_s,
                ping_budget=settings.ws_ping_budget,
            ),
        )
        self.stats = ScanStats()
        self.gc_pauses = GcPauses()
        self._columns: dict[str, np.ndarray] | None = None
        self._columns_asof_ns = 0
        self._last_status: tuple[Any, ...] | None = None  # what, changed, is broadcast at once
        self._last_status_at = 0.0
        self.store: Store = open_store(settings)
        self.recorder = Recorder(
            self.store,
            settings.data_dir / "spill",
            RecorderLimits(
                settings.recorder_queue_rows,
                settings.recorder_flush_s,
                settings.recorder_spill_max_bytes,
                settings.recorder_write_timeout_s,
                settings.recorder_write_rows,
            ),
        )
        self.recovery = Recovery()
        self.archive = Archive(settings.archive_path, settings.archive_zstd_level)
        self.history = History(self.store, self.archive)
        self._retention_due = asyncio.Event()
        self._retention_due.set()  # once warmed up, then after every session
        self._warmed_up = asyncio.Event()
        self.state.on_session_end = self._session_ended
        self._summarized: dt.date | None = None
        self._symbols = pa.array(self.universe.symbols, pa.string())
        self.keyframes = KeyframeSchedule(int(settings.keyframe_minutes * 60e9))
        # Replays and flat-out clocks cycle on a grid of market time, driven by the feed, so a
        # replayed day records the same scan history whatever the machine's speed.
        self.paced_by_feed = settings.feed == "replay" or settings.speed is None
        self.grid = CycleGrid(self.calendar, round(settings.scan_interval_s * 1e9), self.start_ns)
        self.app = create_app(self)
        self.tasks = TaskGroup()
        self._stopping = threading.Event()  # read by warm-up threads
        self._threads: set[asyncio.Future[Any]] = set()  # worker threads running now

    def _snapshot_of(self, scan_id: str) -> Snapshot | None:
        if scan_id not in self.scanner.trackers:
            return None
        return self.scanner.snapshot(scan_id)

    def _scans_changed(
        self, definitions: Sequence[ScanDefinition], changed: list[str], deleted: list[str]
    ) -> None:
        self.scanner.replace_scans(definitions)
        self.keyframes.changed([*changed, *deleted])  # history needs their new snapshots
        if self.stats.warmed_up:
            self._cycle()
        self.hub.scans_replaced(changed, deleted)

    def symbol_values(self, row: int) -> tuple[int, dict[str, Any]]:
        """One symbol's columns as the last scan cycle computed them, and that cycle's instant."""
        if self._columns is None:
            return self.state.now_ns, symbol_values(compute_columns(self.state), self._text, row)
        return self._columns_asof_ns, symbol_values(self._columns, self._text, row)

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
                "link": link_summary(self.feed.connection()),
            },
            "clock": {"speed": self.clock.speed},
            "scans": {
                "cycles": self.stats.cycles,
                "last_cycle_ms": round(self.stats.last_cycle_ms, 3),
            },
            "warmup": {
                "done": self.stats.warmed_up,
                "step": self.stats.warmup_step,
                "progress": self.stats.warmup_done,
                "total": self.stats.warmup_total,
            },
        }

    def _cycle(self) -> None:
        began = time.perf_counter_ns()
        output = self.scanner.cycle()
        self._columns, self._columns_asof_ns = output.columns, output.asof_ns
        self.stats.cycles += 1
        self.stats.deltas += len(output.deltas)
        self.stats.last_cycle_ms = (time.perf_counter_ns() - began) / 1e6
        self.hub.publish(output.deltas, time.time_ns() if self.settings.ws_stamp_frames else None)
        self._record_cycle(output.asof_ns, output.deltas)
        status = self._status_message()
        link = status["feed"]["link"] or {}
        key = (
            status["session"]["phase"],
            status["feed"]["state"],
            status["session"]["date"],
            link.get("socket"),
            link.get("backfill") is not None,
        )
        if key != self._last_status or time.monotonic() - self._last_status_at >= STATUS_EVERY_S:
            self._last_status, self._last_status_at = key, time.monotonic()
            self.hub.broadcast(Frame.of(status))

    def _record_cycle(self, asof_ns: int, deltas: Sequence[Any]) -> None:
        session = self.state.times.date
        keyframes = self.keyframes.due(asof_ns, session, self.scanner.trackers)
        self.recorder.scan_cycle(session, deltas, keyframes)

    def _close_session_if_over(self) -> None:
        """At 20:00 ET (the end of post-market) record the day without waiting for 04:00."""
        times = self.state.times
        if self.state.now_ns >= times.post_close_ns and self._summarized != times.date:
            self._session_ended(self.state.summary())

    def _session_ended(self, summary: SessionSummary) -> None:
        """Record the finished day: its daily bars and its slot-volume profile (once)."""
        if summary.date == self._summarized:
            return
        self._summarized = summary.date
        self.recorder.put("daily_bars", daily_bar_rows(summary, self._symbols))
        self.recorder.put(
            "slot_volume", slot_volume_rows(summary.date, self.universe, summary.slot_volume)
        )
        self._retention_due.set()

    def _warm_up(self) -> None:
        """Warm-up history from the store when it has it, else from the feed (stored as it
        comes), into state one session at a time."""
        self._write_back_spilled()  # a day's bars spilled at its end: stored sessions, not asked
        self.store.write("symbols", conform(SYMBOLS, _reference_rows(self._with_details())))
        self.stats.warmup_step = "reading history from the store"
        history = stored_history(self.store, self.calendar, self.session)
        if history.complete:
            warmup = warmup_from_store(self.store, self.universe, history, self._warmup_step)
            self.recovery.warmup_source = "store"
        else:
            # the sessions the store holds (a run on an earlier day took them), the rest from
            # the feed: the next day asks for one session, not forty
            missing = history.missing
            partial = bool(history.stored)
            self.stats.warmup_step = f"warm-up history from the {self.feed.name} feed" + (
                f": {len(missing)} of {len(history.wanted)} sessions" if partial else ""
            )
            feed_warmup = self.feed.warmup(
                self.session, self._warmup_step, only=missing if partial else None
            )
            stored = warmup_from_store(
                self.store,
                self.universe,
                history,
                lambda _done, _total: self._check_stop(),  # progress is the feed's
                sessions=history.stored,
            )
            warmup = with_fetched(stored, self._stored(feed_warmup.sessions))
            self.recovery.warmup_source = "store and feed" if partial else "feed"
        self.state.load_warmup(warmup)

    def _with_details(self) -> pa.Table:
        """The feed's reference, with the day's details where the feed has them apart (taken
        from the store when it took them today already), loaded into state and the scans."""
        self.stats.warmup_step = f"reference details from the {self.feed.name} feed"
        stored = stored_details(self.store, self.session)
        details = self.feed.details(self.session, stored, self._warmup_step)
        if details is None:
            return self.feed.reference()
        self.state.load_reference(details.table)
        self._text.update(text_columns(self.universe, details.table))
        self.recovery.details_source = details.source
        return details.table

    def _stored(self, sessions: Iterable[WarmupSession]) -> Iterator[WarmupSession]:
        """The feed's warm-up sessions, each written to the store on its way to state (a
        restart then warms up from the store)."""
        for item in sessions:
            self.recovery.warmup_feed_sessions += 1
            self.store.write("daily_bars", item.daily.select(list(DAILY_BARS.columns)))
            if item.slot_volume is not None:
                self.store.write(
                    "slot_volume", slot_volume_rows(item.date, self.universe, item.slot_volume)
                )
            yield item

    def _write_back_spilled(self) -> None:
        """Rows the last process spilled to disk (its store was down) go back into the store
        before today's are read from it: read after, they would be missing from state and come
        from the feed again, then be stored a second time. A store that is down still lets the
        start go on (the rows are written back when it answers)."""
        if not self.recorder.stats.spill_files:
            return
        self.stats.warmup_step = (
            f"writing back {self.recorder.stats.spill_files:,} spilled file(s) to the store"
        )
        while not self.recorder.flush(STOP_CHECK_S):
            self._check_stop()
            if not self.recorder.stats.store_up:
                log.warning("the store is down: today's bars are read without the spilled rows")
                return

    def _recover_today(self) -> int | None:
        """Apply today's stored minute bars (a restart mid-session); returns where they end."""
        self.stats.warmup_step = "today's bars from the store"
        self._check_stop()
        self.store.truncate_from(self.session, self.start_ns)
        times = self.calendar.session(self.session)
        if self.start_ns <= times.pre_open_ns:
            return None
        minutes = max(1, (self.start_ns - times.pre_open_ns) // NS_PER_MINUTE)
        resume_ns: int | None = None
        for batch in today_from_store(
            self.store, self.session, self.universe, times, self.start_ns
        ):
            self.state.apply(batch)
            self.recovery.recovered_bars += len(batch)
            resume_ns = batch.ts_event_ns
            self._warmup_step(
                min(minutes, (resume_ns - times.pre_open_ns) // NS_PER_MINUTE), minutes
            )
        if resume_ns is None:
            return None
        self.recovery.resume_ns = resume_ns
        self.scanner.continue_sequences(last_sequences(self.store, self.session))
        return resume_ns

    def _warmup_step(self, done: int, total: int) -> None:
        """Progress of a warm-up step; also where a stop request ends the warm-up."""
        self.stats.warmup_done, self.stats.warmup_total = done, total
        self._check_stop()

    def _check_stop(self) -> None:
        if self._stopping.is_set():
            raise StopRequested

    async def _announce_warmup(self) -> None:
        """A status frame each second while warming up (the page shows the step), one after."""
        while not self.stats.warmed_up:
            self.hub.broadcast(self.status_frame())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._warmed_up.wait(), STATUS_WARMUP_S)
        self.hub.broadcast(self.status_frame())

    def _caught_up(self) -> None:
        """The feed waits for its first event from the future: everything up to now is in."""
        if not self.stats.warmed_up:
            self.stats.warmed_up = True
            self._warmed_up.set()
            release_free_memory()

    async def _consume_feed(self) -> None:
        try:
            # Warm-up history can take seconds to build; the server answers meanwhile, and a
            # stop request ends it at the next step (``_warmup_step``).
            await self._in_thread(self._warm_up)
            resume_ns = await self._in_thread(self._recover_today)
            release_free_memory()
        except StopRequested:
            return
        except FatalError:  # a refused key: its own line and exit code
            raise
        except Exception as error:
            if self._stopping.is_set():  # a request the stop interrupted (feed.interrupt)
                return
            # Nothing useful can be served without history: end the process with one line.
            log.debug("warm-up failed", exc_info=True)
            first_line = next(iter(str(error).splitlines()), type(error).__name__)
            raise WarmupError(f"warm-up failed: {first_line}") from error
        try:
            await self._follow_feed(resume_ns)
        except FatalError:  # no retry can help (a refused key): the process ends with it
            raise
        except Exception as error:
            # A failed feed is reported (health 503, status message) while the API keeps
            # answering: history and the last state stay browsable.
            log.exception("feed failed")
            self.monitor.observe(FeedStatus(FeedState.FAILED, str(error), self.clock.now_ns()), 0)
            self._caught_up()  # warm-up is over either way: the page shows the failed feed

    async def _follow_feed(self, resume_ns: int | None) -> None:
        """Catch up to the start instant (warm-up's last step), then follow the feed live."""
        times = self.calendar.session(self.session)
        behind = max(1, (self.start_ns - times.pre_open_ns) // NS_PER_MINUTE)
        self.stats.warmup_step = "catching up to the start"
        self.stats.warmup_done, self.stats.warmup_total = 0, behind
        reported = False  # the feed reports the catch-up's progress itself
        clock = CatchUpClock(self.clock, self._caught_up)
        events = self.feed.events(clock, self.start_ns, resume_ns=resume_ns)
        async with contextlib.aclosing(events):  # a failed apply closes the feed's socket too
            async for event in events:
                if self.paced_by_feed:
                    await self._cycles_before(event.ts_event_ns)
                self._apply(event)
                if not self.stats.warmed_up:
                    if isinstance(event, FeedStatus) and event.progress is not None:
                        # a step the feed reports itself (today's bars from a live feed's REST)
                        reported = True
                        self.stats.warmup_step = event.message
                        self.stats.warmup_done, self.stats.warmup_total = event.progress
                    elif isinstance(event, AggregateBatch) and not reported:
                        done = (event.ts_event_ns - times.pre_open_ns) // NS_PER_MINUTE
                        self.stats.warmup_done = min(done, behind)
                    await asyncio.sleep(0)  # a catch-up applies hours at once: let signals in
                    await self._store_keeps_up()
        self._caught_up()
        if self.paced_by_feed:
            await self._cycles_before(self.state.now_ns + 1)
        self.stats.feed_finished = True

    def _apply(self, event: FeedEvent) -> None:
        if not isinstance(event, AggregateBatch):
            self.state.apply_event(event)
            self.monitor.observe(event, self.clock.now_ns())
            self._close_session_if_over()
            return
        applied = self.state.upsert(event)
        self.monitor.observe(event, self.clock.now_ns())
        self._close_session_if_over()
        if event.kind is AggregateKind.MINUTE:
            # what state applied, as it applied it: a duplicate is not stored again, and a
            # correction replaces the bar it corrects
            keep = applied.applied
            if keep.any():
                session = self.state.times.date
                self.recorder.put(
                    "minute_bars",
                    minute_bar_rows(event, keep, session, self._symbols, applied.corrected),
                )

    async def _store_keeps_up(self) -> None:
        """A catch-up makes bars faster than the store writes them: wait for the store
        rather than hold hours of them in memory (waits end at a stop request)."""
        room = self.settings.recorder_queue_rows // 2
        while self.recorder.backlog_rows() > room and not self._stopping.is_set():
            if await self._in_thread(self.recorder.wait_for_room, room, 0.25):
                return  # room, or the store is down / writing back: rows spill instead

    async def _cycles_before(self, ts_ns: int) -> None:
        """Run every grid cycle before ``ts_ns``; none while the market is closed."""
        for at in self.grid.before(ts_ns):
            self.state.advance_to(at)
            self._cycle()
            await asyncio.sleep(0)  # let the server answer between cycles

    async def _scan_loop(self) -> None:
        """A cycle about every ``scan_interval_s`` of wall time, each at an instant of the grid.

        Cycles land on the grid of market time (whole seconds by default) that `replay --until`
        and time travel use, a moment (``CYCLE_GRACE_S``) after the instant so that the feed's
        bars ending on it are in: a live cycle then equals a replay to the same instant. When the
        clock runs slower than real time a cycle repeats the last grid instant meanwhile.
        """
        if self.paced_by_feed:
            return  # cycles run with the feed
        grid_ns = round(self.settings.scan_interval_s * 1e9)
        while True:
            now = self.clock.now_ns()
            speed = self.clock.speed or 1.0
            after_interval = now + round(grid_ns * speed)  # market time one interval from now
            target = after_interval - after_interval % grid_ns
            if target <= now:
                target += grid_ns
            wait_s = min((target - now) / speed / 1e9, self.settings.scan_interval_s)
            await asyncio.sleep(wait_s + CYCLE_GRACE_S)
            if not self.stats.warmed_up:
                continue
            now = self.clock.now_ns()
            self.state.advance_to(max(self.state.now_ns, now - now % grid_ns))
            self._cycle()
            self._close_session_if_over()

    async def _retention(self) -> None:
        """Archive and drop sessions beyond their hot window: once warmed up, after each session."""
        await self._warmed_up.wait()  # warm-up first: it needs the memory and the store
        while True:
            await self._retention_due.wait()
            self._retention_due.clear()
            await self._in_thread(self.recorder.flush, 60.0)
            try:
                report = await self._in_thread(
                    retire, self.store, self.archive, self.settings, self._retention_step
                )
            except StopRequested:
                return
            except Exception:  # the store may be down: try again after the next session
                log.exception("retention failed")
                continue
            finally:
                release_free_memory()  # archiving a session holds it in memory for a while
            for table in report.tables:
                if table.dropped:
                    log.info(
                        "retention: %s archived and dropped %s",
                        table.table,
                        ", ".join(s.isoformat() for s in table.dropped),
                    )
            for failure in report.failures:
                log.warning("retention: %s", failure)

    def _retention_step(self, step: RetentionStep) -> None:
        self._check_stop()  # between sessions: each session is archived, then dropped

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function`` in a worker thread that shutdown waits for (store calls end first)."""
        future = asyncio.get_running_loop().run_in_executor(None, function, *args)
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        future.add_done_callback(_retrieved)
        # Shielded: cancelling the caller leaves this future pending until the thread has
        # really ended, so shutdown can wait for it before closing the store.
        return await asyncio.shield(future)

    async def _threads_done(self, timeout_s: float) -> None:
        """Wait for worker threads (they end at their next step once stopping) before the
        store closes under them."""
        pending = [f for f in self._threads if not f.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout_s)
            if still:
                log.warning("%d worker threads still running at shutdown", len(still))

    async def _drop_laggards(self) -> None:
        """Close clients that stayed behind past the lag timeout (close code 1013)."""
        while True:
            await asyncio.sleep(0.2)
            self.hub.service()
            for client in self.hub.disconnect_laggards():
                log.info("disconnecting WebSocket client %d: behind for too long", client.id)
                client.close()

    async def run(self, stop: asyncio.Event, listener: socket.socket | None = None) -> None:
        """Serve (on ``listener``, else a socket bound now) and consume the feed until ``stop``
        is set or a task fails."""
        if listener is None:
            listener = listen_socket(self.settings.host, self.settings.port)
        server = _Server(server_config(self.app, self.settings))
        self.gc_pauses.install()
        self.recorder.start()
        self.tasks.start(self._consume_feed(), name="feed")
        self.tasks.start(self._scan_loop(), name="scan")
        self.tasks.start(self._announce_warmup(), name="warm-up-status")
        self.tasks.start(self._drop_laggards(), name="websocket-laggards")
        self.tasks.start(self._retention(), name="retention")
        serving = self.tasks.start(server.serve(sockets=[listener]), name="http")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        broken = asyncio.create_task(self.tasks.failed.wait(), name="task-failure")
        await asyncio.wait({stopper, serving, broken}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        broken.cancel()
        self._stopping.set()  # a warm-up thread ends at its next step
        self.feed.interrupt()  # and one waiting on the network (a REST retry) at once
        if self.tasks.failure is not None:
            log.error("stopping: a task failed (%s)", self.tasks.failure)
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(serving), self.settings.shutdown_timeout_s)
        stuck = await self.tasks.stop(self.settings.shutdown_timeout_s / 2)
        if stuck:
            log.warning("tasks still running at shutdown: %s", ", ".join(stuck))
        await self._threads_done(self.settings.shutdown_timeout_s)
        self.app.state.history_reads.close()
        await asyncio.to_thread(self.recorder.stop, max(self.settings.shutdown_timeout_s, 5.0))
        await asyncio.to_thread(self.store.close)  # off the loop: a second Ctrl-C still works
        self.gc_pauses.uninstall()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A worker's failure after its caller was cancelled is not "never retrieved"."""
    if not future.cancelled():
        future.exception()


def _reference_rows(reference: pa.Table) -> pa.Table:
    present = [c for c in SYMBOLS.columns if c in reference.column_names]
    return reference.select(present)
