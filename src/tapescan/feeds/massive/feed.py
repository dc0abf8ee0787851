"""The live Massive feed: universe and warm-up history from REST, then the WebSocket.

- **Universe**: every active ticker of the chosen types (``/v3/reference/tickers``, common stocks
  and ETFs by default), sorted; listed once at start (~12 pages of 1,000).
- **Reference**: name and primary exchange from that listing; market cap, shares outstanding,
  sector and float once a day (``details``: a request per ticker, and the float listing).
- **Warm-up**: grouped daily bars of the 40 sessions before today, one request each, and for the
  last 10 (the RVOL baseline) every ticker's minute aggregates, a request per ticker and
  session, 8 at a time: 118,820 requests at 11,882 symbols. All of it is stored as it comes, so
  a second start on the same day takes it from the store (the node decides that).
- **Events**: the stocks WebSocket (``MassiveClient``: handshake, reconnects with backoff),
  parsed in batches; feed status events when the session's state changes; the minutes the
  socket did not deliver (today's before a start, a drop's gap) from REST (``backfill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncGenerator, Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.feeds.base import Details, StepCallback
from tapescan.feeds.history import (
    DAILY_HISTORY_SESSIONS,
    MINUTE_HISTORY_SESSIONS,
    SLOT_MINUTES,
    SLOTS_PER_DAY,
    Warmup,
    WarmupSession,
)
from tapescan.feeds.massive.backfill import (
    BackfillCounters,
    Backfiller,
    BackfillItem,
    Gap,
    GapDone,
    Handover,
    Progress,
    reconnect_gap,
    start_gap,
)
from tapescan.feeds.massive.client import MassiveClient
from tapescan.feeds.massive.coverage import Coverage
from tapescan.feeds.massive.details import COMPLETE_SHARE, ticker_details, with_floats
from tapescan.feeds.massive.link import Link, LinkState, topics
from tapescan.feeds.massive.parse import FrameParser, ParsedFrame, lulds_of, not_ahead
from tapescan.feeds.massive.rest import (
    REQUEST_THREADS,
    MassiveRest,
    MassiveRestError,
    RestCounters,
    in_order,
    public_url,
)
from tapescan.market.calendar import MarketCalendar
from tapescan.market.clock import Clock
from tapescan.model import (
    NS_PER_MINUTE,
    AggregateBatch,
    AggregateKind,
    FeedEvent,
    FeedState,
    FeedStatus,
    Universe,
    stamped,
)
from tapescan.store.tables import SYMBOLS, conform

TICKERS_PAGE = 1_000  # the endpoint's maximum
PROGRESS_EVERY = 100  # tickers between progress reports (and stop checks)
SLOT_NS = SLOT_MINUTES * NS_PER_MINUTE
SLOT_VOLUME_MAX = 2**32 - 1
NS_PER_MS = 1_000_000
CAUGHT_UP_WAIT_NS = 1_000_000  # 1 ms


@dataclass(frozen=True, slots=True)
class MassiveConfig:
    api_key: str
    ws_url: str
    rest_url: str
    channels: tuple[str, ...] = ("A", "AM", "LULD")
    ticker_types: tuple[str, ...] = ("CS", "ETF")
    stale_after_s: float = 30.0  # silence during a session that closes and reconnects the socket
    coverage_file: Path | None = None  # where today's complete minutes are kept (coverage.py)

    def __repr__(self) -> str:  # never the key
        return f"MassiveConfig(ws_url={self.ws_url!r}, rest_url={self.rest_url!r})"


class MassiveFeed:
    def __init__(
        self,
        config: MassiveConfig,
        calendar: MarketCalendar,
        universe: Universe,
        reference: pa.Table,
    ) -> None:
        self.config = config
        self.calendar = calendar
        self._universe = universe
        self._reference = reference
        self.client: MassiveClient | None = None  # while events() runs: for health
        self.rest_counters = RestCounters()  # every REST request of this process
        self.backfill = BackfillCounters()  # minute bars taken from REST for the socket's gaps
        self._stop = threading.Event()  # interrupt(): REST retries end at once

    @classmethod
    def open(cls, config: MassiveConfig, calendar: MarketCalendar) -> MassiveFeed:
        """List the universe (raises MassiveFatalError for a refused key)."""
        counters = RestCounters()
        with MassiveRest(config.api_key, config.rest_url, counters=counters) as rest:
            rows = list_tickers(rest, config.ticker_types)
        if not rows:
            raise MassiveRestError(
                "the Massive REST API listed no active tickers of types "
                + ",".join(config.ticker_types)
            )
        rows.sort(key=lambda row: row[0])
        universe = Universe(row[0] for row in rows)
        reference = pa.table(
            {
                "symbol": pa.array([r[0] for r in rows], pa.string()),
                "name": pa.array([r[1] for r in rows], pa.string()),
                "exchange": pa.array([r[2] for r in rows], pa.string()),
            }
        )
        feed = cls(config, calendar, universe, reference)
        feed.rest_counters = counters
        return feed

    @property
    def name(self) -> str:
        return "massive"

    @property
    def universe(self) -> Universe:
        return self._universe

    def reference(self) -> pa.Table:
        return self._reference

    def details(
        self, session: dt.date, stored: pa.Table, on_step: StepCallback | None = None
    ) -> Details:
        """Every ticker's market cap, shares outstanding, sector and float for ``session``: those
        the store took that day when they cover the universe (90%), else a request per ticker
        and the float listing (feeds/massive/details.py)."""
        if stored.num_rows >= COMPLETE_SHARE * len(self._universe):  # taken today, each
            # a ticker listed since has its listing's name and exchange, no details yet
            known = pa.array(stored.column("symbol").to_pylist())
            listed = self._reference.filter(pc.invert(pc.is_in(self._reference["symbol"], known)))
            if listed.num_rows:
                stored = pa.concat_tables([stored, conform(SYMBOLS, listed)])
            if stored.column("float_shares").null_count == stored.num_rows:
                # the float listing failed when they were taken: asked again (3 requests)
                with self._rest() as rest:
                    stored = with_floats(rest, stored)
            return Details(stored, "store")
        with self._rest() as rest, ThreadPoolExecutor(REQUEST_THREADS, "massive-rest") as pool:
            table = ticker_details(
                rest, pool, self._universe, self._reference, session, REQUEST_THREADS, on_step
            )
            table = with_floats(rest, table)
        return Details(table, "feed")

    def warmup(
        self,
        session: dt.date,
        on_step: StepCallback | None = None,
        only: Collection[dt.date] | None = None,
    ) -> Warmup:
        """Grouped daily bars of the 40 sessions before ``session`` and the slot profiles of the
        last 10 (``only`` those of them, when given), requested as they are read."""
        days = self.calendar.previous_sessions(session, DAILY_HISTORY_SESSIONS)
        minute_days = set(days[-MINUTE_HISTORY_SESSIONS:])
        if only is not None:
            days = [day for day in days if day in only]
        return Warmup(session, self._daily_sessions(days, minute_days, on_step))

    def _daily_sessions(
        self, days: Sequence[dt.date], minute_days: set[dt.date], on_step: StepCallback | None
    ) -> Iterator[WarmupSession]:
        """Each session's grouped daily bars; those in ``minute_days`` (the last 10) also their
        slot profiles, from each ticker's minute aggregates (a request per ticker and session)."""
        minute_days = minute_days & set(days)
        symbols = len(self._universe)
        total = len(days) + len(minute_days) * symbols
        done = 0
        if on_step is not None:
            on_step(0, total)
        rest = self._rest()
        with rest, ThreadPoolExecutor(REQUEST_THREADS, "massive-rest") as pool:
            for day in days:
                daily = grouped_daily(rest, day, self._universe)
                done += 1
                if on_step is not None:  # where a stop request ends the warm-up
                    on_step(done, total)
                slots = None
                if day in minute_days:
                    step = None if on_step is None else _offset(on_step, done, total)
                    slots = slot_volume(rest, pool, day, self.calendar, self._universe, step)
                    done += symbols
                yield WarmupSession(day, daily, slots)

    def connection(self) -> dict[str, Any]:
        """The socket session and the REST requests, for health (never the key)."""
        client = self.client
        rest = self.rest_counters
        details: dict[str, Any] = {
            "rest": {
                "url": public_url(self.config.rest_url),
                "requests": rest.requests,
                "retries": rest.retries,
                "rate_limited": rest.rate_limited,
                "seconds": round(rest.seconds, 3),
                "last_error": rest.last_error,
                "by_endpoint": dict(rest.by_path),
            },
            "socket": {"url": public_url(self.config.ws_url), "state": "not started"},
            "backfill": self.backfill.as_dict(),
        }
        if client is not None:
            link = client.link.counters
            parse = client.parser.counters
            details["socket"] = {
                "url": public_url(self.config.ws_url),
                "state": client.state.value,
                "connects": link.connects,
                "reconnects": link.reconnects,
                "drops": dict(link.drops),
                "last_error": link.last_error,
                "warnings": list(client.warnings),
                "queued_frames": client.frames.qsize(),
                "frames": parse.frames,
                "aggregates": parse.aggregates,
                "lulds": parse.lulds,
                "malformed_frames": parse.malformed_frames,
                "malformed_messages": parse.malformed_messages,
                "unknown_symbols": parse.unknown_symbols,
                "skipped_events": parse.skipped_events,
                "ahead_of_clock": parse.ahead_of_clock,
            }
        return details

    async def events(
        self, clock: Clock, start_ns: int, end_ns: int | None = None, resume_ns: int | None = None
    ) -> AsyncGenerator[FeedEvent, None]:
        """Live aggregates from the WebSocket, until ``end_ns`` (or for ever), and from REST the
        minutes it did not deliver (feeds/massive/backfill.py).

        Started during a session, today's minute bars before the socket went live come from
        REST first (from the end of ``resume_ns``, the bars a restart recovered from the store);
        the catch-up ends when they are in. After each drop the gap is filled the same way
        while the socket goes on. Socket bars that end by ``resume_ns`` are dropped.
        """
        link = Link(
            self.config.api_key,
            topics(self.config.channels),
            stale_after_s=self.config.stale_after_s,
        )
        client = MassiveClient(
            self.config.ws_url,
            link,
            FrameParser(self._universe),
            in_session=lambda: self.calendar.session_in_progress(clock.now_ns()) is not None,
        )
        self.client = client
        backfill = Backfiller(self._rest, self._universe, clock.now_ns, self.backfill)
        minute_bars_live = "AM" in self.config.channels
        running = asyncio.create_task(client.run(), name="massive-socket")
        try:
            yield FeedStatus(
                FeedState.STARTING,
                f"connecting to {public_url(self.config.ws_url)}",
                clock.now_ns(),
            )
            await _until_live_or_failed(client, running)
            live_ns = clock.now_ns()
            yield FeedStatus(FeedState.LIVE, "Massive stocks feed live", live_ns)
            coverage = Coverage(self.config.coverage_file)
            times = self.calendar.session_in_progress(live_ns)
            rest_from = resume_ns
            if times is not None:
                # a stop during a backfill left some tickers' minutes out: resume where every
                # ticker's were in, not at the newest stored bar
                rest_from = coverage.resume_ns(times.date, resume_ns)
            today = start_gap(self.calendar, live_ns, rest_from, minute_bars_live)
            if times is not None:
                coverage.start(times.date, live_ns - live_ns % NS_PER_MINUTE)
                if today is not None:
                    coverage.gap_opened(today.from_ns, today.to_ns)
            handover = Handover()  # where the socket's minutes must begin
            if times is not None and minute_bars_live:
                live_minute = live_ns - live_ns % NS_PER_MINUTE
                handover.expect(
                    live_minute if today is None else today.to_ns, "start", times.post_close_ns
                )
            if today is None:
                # a socket has no past: the catch-up is over (a wait for an instant to come
                # says so)
                await clock.sleep_until(clock.now_ns() + CAUGHT_UP_WAIT_NS)
            else:
                backfill.request(today)
            left_ns: int | None = None  # when the socket stopped being live
            newest_ns = 0  # the end of the newest bar from the socket
            async with contextlib.aclosing(_session_events(client, running, backfill)) as session:
                async for item in session:
                    now = clock.now_ns()
                    if (late := handover.overdue(now)) is not None:
                        coverage.gap_opened(late.from_ns, late.to_ns)
                        backfill.request(late)
                    if isinstance(item, LinkState):
                        if item is not LinkState.LIVE and left_ns is None:
                            # a stalled socket is noticed only after its silence: the gap
                            # starts where its data stopped
                            left_ns = min(now, newest_ns) if newest_ns else now
                            coverage.socket_left(left_ns - left_ns % NS_PER_MINUTE - NS_PER_MINUTE)
                        elif item is LinkState.LIVE and left_ns is not None:
                            gap = reconnect_gap(self.calendar, left_ns, now, minute_bars_live)
                            if gap is not None:
                                coverage.gap_opened(gap.from_ns, gap.to_ns)
                                backfill.request(gap)
                            in_session = self.calendar.session_in_progress(now)
                            if minute_bars_live and in_session is not None:
                                handover.expect(
                                    now - now % NS_PER_MINUTE if gap is None else gap.to_ns,
                                    "reconnect",
                                    in_session.post_close_ns,
                                )
                            left_ns = None
                        yield _status_of(item, now)
                    elif isinstance(item, Progress):
                        yield FeedStatus(
                            _feed_state(client),
                            f"{_gap_name(item.gap)} from REST: {item.done:,} of {item.total:,}"
                            " tickers",
                            now,
                            progress=(item.done, item.total),
                        )
                    elif isinstance(item, GapDone):
                        coverage.gap_filled(
                            item.gap.from_ns, item.gap.to_ns, item.error is not None
                        )
                        yield FeedStatus(_feed_state(client), _done_message(item), now)
                        if item.gap.reason == "start":
                            await clock.sleep_until(clock.now_ns() + CAUGHT_UP_WAIT_NS)
                    elif isinstance(item, AggregateBatch):
                        yield item  # a gap's minute bars: before any end, after any resume
                    else:
                        for luld in lulds_of(item, now, client.parser.counters, resume_ns):
                            if end_ns is None or luld.ts_event_ns <= end_ns:
                                yield luld  # as the bars: nothing after the end
                        for parsed in item.batches:
                            batch = not_ahead(parsed, now, client.parser.counters)
                            if batch is None:
                                continue
                            if end_ns is not None and batch.ts_event_ns > end_ns:
                                return
                            if resume_ns is not None and batch.ts_event_ns <= resume_ns:
                                continue
                            newest_ns = max(newest_ns, batch.ts_event_ns)
                            if batch.kind is AggregateKind.MINUTE and minute_bars_live:
                                hole = handover.hole(batch.start_ns)
                                if hole is not None:
                                    coverage.gap_opened(hole.from_ns, hole.to_ns)
                                    backfill.request(hole)
                            if batch.kind is AggregateKind.MINUTE or not minute_bars_live:
                                times_now = self.calendar.session_in_progress(now)
                                if times_now is not None:
                                    coverage.session_seen(
                                        times_now.date, times_now.pre_open_ns, left_ns is None
                                    )
                                # never past the clock; and a minute is complete only once
                                # the next one's bars come (one minute's AM bars of every
                                # ticker come in many frames)
                                end = min(batch.ts_event_ns, now)
                                coverage.socket_bar(
                                    end - end % NS_PER_MINUTE - NS_PER_MINUTE,
                                    client.state is LinkState.LIVE,
                                )
                            yield stamped(batch)
        finally:
            await backfill.close()
            await client.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
            # the client stays for health: its counters and last error outlive the session

    def _rest(self) -> MassiveRest:
        return MassiveRest(
            self.config.api_key,
            self.config.rest_url,
            counters=self.rest_counters,
            stop=self._stop,
        )

    def interrupt(self) -> None:
        """The process is stopping: REST requests are not retried or made again."""
        self._stop.set()


def _feed_state(client: MassiveClient) -> FeedState:
    return FeedState.LIVE if client.state is LinkState.LIVE else FeedState.STARTING


def _gap_name(gap: Gap) -> str:
    if gap.reason == "start":
        return f"today's minute bars {gap.describe()}"
    return f"the reconnect's gap {gap.describe()}"


def _done_message(done: GapDone) -> str:
    name = _gap_name(done.gap)
    if done.error is not None:
        return f"{name} not filled from REST: {done.error}"
    return (
        f"{name} filled from REST: {done.bars:,} minute bars, {done.requests:,} requests,"
        f" {done.seconds:.1f} s"
    )


def _status_of(state: LinkState, now_ns: int) -> FeedStatus:
    if state is LinkState.LIVE:
        return FeedStatus(FeedState.LIVE, "Massive stocks feed live again", now_ns)
    return FeedStatus(FeedState.STARTING, f"Massive stocks feed {state.value}", now_ns)


async def _until_live_or_failed(client: MassiveClient, running: asyncio.Task[None]) -> None:
    waiting = asyncio.create_task(client.wait_until(lambda: client.state is LinkState.LIVE))
    try:
        await asyncio.wait({waiting, running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if running.done():
        running.result()  # raises the client's fatal error (a refused key)
        raise MassiveRestError("the Massive socket ended before it was live")


async def _session_events(
    client: MassiveClient, running: asyncio.Task[None], backfill: Backfiller
) -> AsyncGenerator[ParsedFrame | LinkState | BackfillItem, None]:
    """Parsed batches as they come, the session's state each time it changes (a drop, a
    reconnect, live again) and what the backfill brings, until the session ends (its error
    raised then)."""
    batches = aiter(client.batches())
    shown = client.state
    sessions = client.link.counters.sessions  # live sessions the consumer was told of
    following: asyncio.Future[ParsedFrame] | None = None
    filled: asyncio.Future[BackfillItem] | None = None
    try:
        while True:
            if following is None:
                following = asyncio.ensure_future(anext(batches))
            if filled is None:
                filled = asyncio.ensure_future(backfill.next())
            changed = asyncio.ensure_future(client.wait_until(_left(client, shown)))
            pending: set[asyncio.Future[Any]] = {following, filled, running, changed}
            try:
                await asyncio.wait(pending, return_when=FIRST_COMPLETED)
            finally:
                changed.cancel()
            seen_sessions = client.link.counters.sessions
            if client.state is not shown:
                shown = client.state
                yield shown
            elif shown is LinkState.LIVE and seen_sessions > sessions:
                # dropped and live again while the consumer was busy (a wait for the store):
                # the drop it did not see still leaves a gap to fill
                yield LinkState.RECONNECTING
                yield LinkState.LIVE
            if shown is LinkState.LIVE:
                sessions = seen_sessions
            if filled.done():
                item, filled = filled.result(), None
                yield item
            if following.done():
                parsed, following = following.result(), None
                # the same again just before a frame: it may be the first of a session that
                # began while the consumer held the item above (the frame then counts as after
                # the drop, and the gap covers it too)
                seen_sessions = client.link.counters.sessions
                if shown is LinkState.LIVE and seen_sessions > sessions:
                    yield LinkState.RECONNECTING
                    yield LinkState.LIVE
                    sessions = seen_sessions
                yield parsed
            elif running.done():
                running.result()
                return
    finally:
        for future in (following, filled):
            if future is not None:
                future.cancel()


def _left(client: MassiveClient, state: LinkState) -> Callable[[], bool]:
    """A condition: the session is no longer in ``state``."""
    return lambda: client.state is not state


def _offset(on_step: StepCallback, before: int, total: int) -> StepCallback:
    return lambda done, _: on_step(before + done, total)


def slot_volume(
    rest: MassiveRest,
    pool: ThreadPoolExecutor,
    day: dt.date,
    calendar: MarketCalendar,
    universe: Universe,
    on_step: StepCallback | None = None,
) -> npt.NDArray[np.uint32]:
    """Volume per 5-minute slot of ``day`` for every ticker, (symbols, 192), from each ticker's
    minute aggregates; requests run ``REQUEST_THREADS`` at a time, in universe order."""
    times = calendar.session(day)
    slots = np.zeros((len(universe), SLOTS_PER_DAY), dtype=np.uint32)
    path = f"/range/1/minute/{day.isoformat()}/{day.isoformat()}"
    params = {"adjusted": "true", "sort": "asc", "limit": "50000"}
    symbols = universe.symbols

    def fetch(row: int) -> dict[str, Any]:
        return rest.get(f"/v2/aggs/ticker/{quote(symbols[row], safe='')}{path}", params)

    with contextlib.closing(in_order(pool, range(len(symbols)), fetch)) as answers:
        for done, (row, answer) in enumerate(answers, start=1):
            _add_slots(slots[row], answer.result(), times.pre_open_ns)
            if on_step is not None and (done % PROGRESS_EVERY == 0 or done == len(symbols)):
                on_step(done, len(symbols))  # where a stop request ends the warm-up
    return slots


def _add_slots(slots: npt.NDArray[np.uint32], body: dict[str, Any], pre_open_ns: int) -> None:
    """One ticker's minute bars into its (192,) slots; bars outside 04:00-20:00 ET are left."""
    for bar in body.get("results") or []:
        try:
            start_ns = int(bar["t"]) * NS_PER_MS
            volume = float(bar["v"])
        except (KeyError, TypeError, ValueError):
            continue
        slot = (start_ns - pre_open_ns) // SLOT_NS
        if 0 <= slot < SLOTS_PER_DAY and np.isfinite(volume) and volume > 0:
            slots[slot] = min(int(slots[slot]) + round(volume), SLOT_VOLUME_MAX)


def list_tickers(rest: MassiveRest, types: Sequence[str]) -> list[tuple[str, str, str]]:
    """(ticker, name, primary exchange) of every active stock of ``types``."""
    seen: dict[str, tuple[str, str, str]] = {}
    for kind in types:
        params = {
            "market": "stocks",
            "active": "true",
            "type": kind,
            "limit": str(TICKERS_PAGE),
            "order": "asc",
            "sort": "ticker",
        }
        for page in rest.pages("/v3/reference/tickers", params):
            for item in page.get("results") or []:
                ticker = item.get("ticker") if isinstance(item, dict) else None
                if isinstance(ticker, str) and ticker and ticker not in seen:
                    seen[ticker] = (
                        ticker,
                        str(item.get("name") or ""),
                        str(item.get("primary_exchange") or ""),
                    )
    return list(seen.values())


def grouped_daily(rest: MassiveRest, day: dt.date, universe: Universe) -> pa.Table:
    """One session's daily bars of the universe, replay schema (volume rounded to shares)."""
    body = rest.get(
        f"/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}", {"adjusted": "true"}
    )
    results = body.get("results") or []
    symbols: list[str] = []
    values: list[tuple[float, float, float, float, float]] = []
    for item in results:
        if not isinstance(item, dict):
            continue
        ticker = item.get("T")
        if not isinstance(ticker, str) or universe.index_of(ticker) < 0:
            continue
        try:
            row = tuple(float(item[key]) for key in ("o", "h", "l", "c", "v"))
        except (KeyError, TypeError, ValueError):
            continue
        if not all(np.isfinite(row)) or row[4] < 0:
            continue
        symbols.append(ticker)
        values.append(row)  # type: ignore[arg-type]
    grid = np.array(values, dtype=np.float64).reshape(-1, 5)
    return pa.table(
        {
            "symbol": pa.array(symbols, pa.string()),
            "date": pa.array([day] * len(symbols), pa.date32()),
            "open": pa.array(grid[:, 0]),
            "high": pa.array(grid[:, 1]),
            "low": pa.array(grid[:, 2]),
            "close": pa.array(grid[:, 3]),
            "volume": pa.array(np.round(grid[:, 4]).astype(np.int64)),
        }
    )
