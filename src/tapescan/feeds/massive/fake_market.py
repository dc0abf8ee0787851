"""The simulated market as Massive would serve it: REST answers and WebSocket frames.

``tapescan fake-massive`` joins this to the fake socket (``fake_server.FakeMassive``) and the
fake REST API (``fake_rest``). The warm-up history (the 40 sessions before the served one) is
drawn once at start, before anything is served, exactly as the simulated feed draws it for
``tapescan run``; the socket then carries that feed's live aggregates at the clock's pace, as
``A`` and ``AM`` messages in frames of up to ``FRAME_MESSAGES``. Every minute bar of the served
session that the feed draws (the catch-up before ``--start`` included) is kept for REST's minute
aggregates (``TodayMinutes``, ~64 B a bar: ~320 MB for a whole day at 11,882 symbols).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import numpy.typing as npt

from tapescan.feeds.massive.fake_server import FakeMassive
from tapescan.feeds.massive.fake_source import FakeSource, SessionMinutes, SimSource
from tapescan.feeds.massive.parse import LULD_HALT, LULD_REOPEN
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.clock import Clock
from tapescan.model import (
    NS_PER_SECOND,
    AggregateBatch,
    AggregateKind,
    BandBatch,
    FeedStatus,
    HaltEvent,
)

FRAME_MESSAGES = 2_000  # messages per socket frame (~250 KB)
NS_PER_MS = 1_000_000
MINUTE_MS = 60_000
TODAY_WAIT_S = 30.0  # a REST request for minutes the feed has not drawn yet waits this long


class Aggregate(msgspec.Struct, omit_defaults=True):
    """An ``A`` or ``AM`` message, the fields Massive sends (``a``/``op`` left out)."""

    ev: str
    sym: str
    v: int
    av: int
    vw: float
    o: float
    c: float
    h: float
    l: float  # noqa: E741 - the protocol's name
    z: int
    s: int
    e: int


class Luld(msgspec.Struct):
    """An ``LULD`` message: the symbol's key is ``T``; ``t`` in ns, as the live feed sends it."""

    ev: str
    T: str
    h: float
    l: float  # noqa: E741 - the protocol's name
    i: list[int]
    z: int
    t: int
    q: int


LULD_BAND = 21  # the indicator of a price band (halts: parse.LULD_HALT, parse.LULD_REOPEN)

_encode = msgspec.json.Encoder().encode
_ET = ZoneInfo("America/New_York")


class TodayMinutes:
    """The served session's minute bars as the feed draws them, a batch per minute (rows in
    symbol order), for REST; a reader waits until the minutes it asks for are drawn."""

    def __init__(self) -> None:
        self._day: dt.date | None = None
        self._batches: list[AggregateBatch] = []
        self._drawn_until_ns = 0  # the end of the latest minute kept
        self._changed = threading.Condition()

    def add(self, day: dt.date, batch: AggregateBatch) -> None:
        with self._changed:
            if day != self._day:  # a new session: the last one goes
                self._day, self._batches, self._drawn_until_ns = day, [], 0
            if len(batch):
                self._batches.append(batch)
            self._drawn_until_ns = max(self._drawn_until_ns, batch.ts_event_ns)
            self._changed.notify_all()

    @property
    def day(self) -> dt.date | None:
        """The session whose minutes are kept (None before the first is drawn)."""
        with self._changed:
            return self._day

    def drawn_until(self, day: dt.date, ts_ns: int, timeout_s: float) -> bool:
        """Wait until the minutes of ``day`` ending by ``ts_ns`` are drawn (False: timed out)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._day == day and self._drawn_until_ns >= ts_ns, timeout_s
            )

    def totals(self, rows: int, now_ns: int) -> DayTotals:
        """The day so far of every row, from the minutes ended by ``now_ns``."""
        with self._changed:
            batches = list(self._batches)
        return day_totals(batches, rows, now_ns)

    def bars(self, row: int, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        """``row``'s bars starting in [from_ms, to_ms], in time order."""
        with self._changed:
            batches = list(self._batches)
        out: list[dict[str, Any]] = []
        for batch in _starting_within(batches, from_ms * NS_PER_MS, to_ms * NS_PER_MS):
            rows = batch.symbol_index
            at = int(np.searchsorted(rows, row))
            if at < len(rows) and rows[at] == row:
                out.append(bar_of(batch, at))
        return out


def bar_of(batch: AggregateBatch, at: int) -> dict[str, Any]:
    """Row ``at`` of a minute batch as a REST minute aggregate (start ``t`` in ms)."""
    return {
        "o": float(batch.open[at]),
        "h": float(batch.high[at]),
        "l": float(batch.low[at]),
        "c": float(batch.close[at]),
        "v": int(batch.volume[at]),
        "vw": round(float(batch.vwap[at]), 4),
        "n": int(batch.trades[at]),
        "t": int(batch.start_ns[at]) // NS_PER_MS,
    }


@dataclass(frozen=True, slots=True)
class DayTotals:
    """Each symbol row's day so far (its minute bars ended by an instant) and latest bar:
    what a full-market snapshot reports."""

    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]  # index into ``bars`` of the row's latest bar (-1: none)
    bars: list[AggregateBatch]


def day_totals(batches: list[AggregateBatch], rows: int, now_ns: int) -> DayTotals:
    """Totals of ``batches`` (one minute each, in time order) that ended by ``now_ns``."""
    kept = [batch for batch in batches if batch.ts_event_ns <= now_ns]
    open_ = np.full(rows, np.nan)
    high = np.full(rows, -np.inf)
    low = np.full(rows, np.inf)
    close = np.full(rows, np.nan)
    volume = np.zeros(rows, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    for index, batch in enumerate(kept):
        at = batch.symbol_index
        first = np.isnan(open_[at])
        open_[at[first]] = batch.open[first]
        high[at] = np.maximum(high[at], batch.high)
        low[at] = np.minimum(low[at], batch.low)
        close[at] = batch.close
        volume[at] += batch.volume
        last[at] = index
    return DayTotals(open_, high, low, close, volume, last, kept)


def _starting_within(
    batches: list[AggregateBatch], from_ns: int, to_ns: int
) -> Iterator[AggregateBatch]:
    for batch in batches:
        start = int(batch.start_ns[0])
        if from_ns <= start <= to_ns:
            yield batch


_MINUTE_FIELDS = ("start_ms", "open", "high", "low", "close", "vwap", "volume", "trades")


def preliminary(batch: AggregateBatch) -> AggregateBatch:
    """A minute batch as first broadcast before its late trades: every third symbol row lacks a
    quarter of its volume and the prints that made its high and low (corrected a minute later)."""
    late = batch.symbol_index % 3 == 0
    return AggregateBatch(
        kind=batch.kind,
        symbol_index=batch.symbol_index,
        start_ns=batch.start_ns,
        open=batch.open,
        high=np.where(late, np.maximum(batch.open, batch.close), batch.high),
        low=np.where(late, np.minimum(batch.open, batch.close), batch.low),
        close=batch.close,
        volume=np.where(late, batch.volume - batch.volume // 4, batch.volume),
        vwap=batch.vwap,
        trades=batch.trades,
    )


class FakeMarket:
    def __init__(self, source: FakeSource, session: dt.date, corrections: bool = False) -> None:
        self.source = source
        self.calendar = source.calendar
        # Re-sent and corrected bars, as Massive sends them when late trades change a bar: each
        # minute bar first as ``preliminary``, corrected (sent twice) after the next minute's,
        # and every tenth second's bars twice.
        self.corrections = corrections
        self._minutes: SessionMinutes | None = None  # the one session kept (client asks in order)
        self._minutes_lock = threading.Lock()
        self.today = TodayMinutes()
        self.session = session
        self.second_aggregates = source.second_aggregates
        self.symbols = source.universe.symbols
        self._daily: dict[dt.date, list[dict[str, Any]]] = {}
        self._day_volume = np.zeros(len(self.symbols), dtype=np.int64)
        self._volume_day: dt.date | None = None
        self._upper = np.zeros(len(self.symbols))  # the last bands published (halts repeat them)
        self._lower = np.zeros(len(self.symbols))
        self._luld_sequence = 0
        self._luld_day: dt.date | None = None
        self._reference: list[dict[str, Any]] | None = None  # rows of ticker details, once asked
        self.drop_at_ns: int | None = None  # the socket's connections cut (1006) at this instant

    @classmethod
    def simulated(
        cls,
        market: SimMarket,
        session: dt.date,
        second_aggregates: bool = False,
        corrections: bool = False,
    ) -> FakeMarket:
        return cls(SimSource(market, second_aggregates), session, corrections)

    def draw_history(self, on_step: Callable[[int, int], None] | None = None) -> None:
        """Take the sessions before the served one once (the simulator draws its 40 warm-up
        sessions, ~40 s at 11,882 symbols) and keep their daily bars as grouped-daily results
        (~25 MB at 11,882 symbols x 40 sessions)."""
        for day, table in self.source.history(self.session, on_step):
            self._daily[day] = [
                {"T": s, "o": o, "h": h, "l": low, "c": c, "v": v, "t": _close_ms(day)}
                for s, o, h, low, c, v in zip(
                    table.column("symbol").to_pylist(),
                    table.column("open").to_pylist(),
                    table.column("high").to_pylist(),
                    table.column("low").to_pylist(),
                    table.column("close").to_pylist(),
                    table.column("volume").to_pylist(),
                    strict=True,
                )
            ]

    # ------------------------------------------------------------------ REST answers

    def tickers(
        self, kind: str | None, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the ticker listing and the offset of the next page (-1: none)."""
        if kind not in (None, "", "CS"):  # the simulated universe holds common stocks only
            return [], -1
        reference = self.source.reference_table()
        names = reference.column("name").to_pylist()
        exchanges = reference.column("exchange").to_pylist()
        end = min(len(self.symbols), offset + limit)
        page = [
            {
                "ticker": self.symbols[i],
                "name": names[i],
                "market": "stocks",
                "locale": "us",
                "primary_exchange": exchanges[i],
                "type": "CS",
                "active": True,
                "currency_name": "usd",
            }
            for i in range(offset, end)
        ]
        return page, (end if end < len(self.symbols) else -1)

    def ticker_details(self, ticker: str) -> dict[str, Any] | None:
        """One ticker's details, from the simulated reference (None: no such ticker). The
        simulated float is not in them, as Massive's details have none (``floats`` lists it)."""
        row = self.source.universe.index_of(ticker)
        if row < 0:
            return None
        if self._reference is None:
            self._reference = self.source.reference_table().to_pylist()
        item = self._reference[row]
        return {
            "ticker": ticker,
            "name": item["name"],
            "market": "stocks",
            "locale": "us",
            "primary_exchange": item["exchange"],
            "type": "CS",
            "active": True,
            "currency_name": "usd",
            "market_cap": item["market_cap"],
            "share_class_shares_outstanding": item["shares_outstanding"],
            "weighted_shares_outstanding": item["shares_outstanding"],
            "sic_description": item["sector"],
            "round_lot": 100,
        }

    def floats(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the free-float listing (in ticker order, the simulated float) and the offset
        of the next page (-1: none)."""
        if self._reference is None:
            self._reference = self.source.reference_table().to_pylist()
        end = min(len(self.symbols), offset + limit)
        effective = (self.session - dt.timedelta(days=30)).isoformat()
        page = []
        for item in self._reference[offset:end]:
            shares, outstanding = item["float_shares"], item["shares_outstanding"]
            if shares is None:  # recorded reference data without a float: not listed
                continue
            entry = {
                "ticker": item["symbol"],
                "free_float": int(shares),
                "effective_date": effective,
            }
            if outstanding:
                entry["free_float_percent"] = round(100 * shares / outstanding, 2)
            page.append(entry)
        return page, (end if end < len(self.symbols) else -1)

    def grouped_daily(self, day: dt.date) -> list[dict[str, Any]] | None:
        """Daily bars of every symbol on ``day``; None for a day not drawn (no results)."""
        return self._daily.get(day)

    def minute_bars(
        self, ticker: str, day: dt.date, from_ms: int, to_ms: int, now_ns: int
    ) -> list[dict[str, Any]]:
        """``ticker``'s minute bars of ``day`` starting in [from_ms, to_ms]: a past session's
        (the day just ended among them when the fake starts after 20:00 ET), or the served
        session's minutes closed by ``now_ns`` (none for other days)."""
        row = self.source.universe.index_of(ticker)
        if row < 0:
            return []
        if day in (self.session, self.today.day):  # minutes the feed draws
            closed_ms = now_ns // NS_PER_MS - MINUTE_MS  # a minute is served once it has ended
            to_ms = min(to_ms, closed_ms)
            if to_ms < from_ms:
                return []
            # the feed draws minutes as they end: wait for the last one asked for
            last_end_ms = to_ms - to_ms % MINUTE_MS + MINUTE_MS
            self.today.drawn_until(day, last_end_ms * NS_PER_MS, TODAY_WAIT_S)
            return self.today.bars(row, from_ms, to_ms)
        if day > self.session or day not in self._daily:
            return []
        with self._minutes_lock:  # REST handlers run in threads
            if self._minutes is None or self._minutes.day != day:
                self._minutes = None  # the old one goes first: one session in memory
                self._minutes = self.source.session_minutes(day)
            minutes = self._minutes
        return [b for b in minutes.bars(row) if from_ms <= b["t"] <= to_ms]

    def snapshot(self, now_ns: int) -> list[dict[str, Any]]:
        """Every ticker's full-market snapshot at ``now_ns``, from the served session's minutes
        ended by then: ``day`` so far, ``min`` (its latest minute bar, ``av`` the day's volume),
        ``prevDay`` (the session before), ``updated`` (ns, the last instant of its latest bar;
        before its first bar of the day, the close of its previous session). No ``lastTrade``
        or ``lastQuote``: a plan of aggregates only."""
        day = self.calendar.trading_day(now_ns)
        # the minutes ended by now, once drawn (as the minute aggregates wait for them)
        self.today.drawn_until(day, now_ns - now_ns % (MINUTE_MS * NS_PER_MS), TODAY_WAIT_S)
        totals = self.today.totals(len(self.symbols), now_ns)
        previous = self.calendar.previous_sessions(self.session, 1)[0]
        prior = {row["T"]: row for row in self._daily.get(previous) or ()}
        prior_close_ns = _close_ms(previous) * NS_PER_MS
        out: list[dict[str, Any]] = []
        for row, symbol in enumerate(self.symbols):
            item: dict[str, Any] = {"ticker": symbol, "todaysChange": 0.0, "todaysChangePerc": 0.0}
            before = prior.get(symbol)
            if before is not None:
                item["prevDay"] = {k: before[k] for k in ("o", "h", "l", "c", "v")}
            index = int(totals.last[row])
            if index < 0:
                item["day"] = {"o": 0, "h": 0, "l": 0, "c": 0, "v": 0, "vw": 0}
                item["updated"] = prior_close_ns if before is not None else 0
                out.append(item)
                continue
            bar = totals.bars[index]
            at = int(np.searchsorted(bar.symbol_index, row))
            start_ns = int(bar.start_ns[at])
            close = float(totals.close[row])
            item["day"] = {
                "o": float(totals.open[row]),
                "h": float(totals.high[row]),
                "l": float(totals.low[row]),
                "c": close,
                "v": int(totals.volume[row]),
            }
            item["min"] = {"av": int(totals.volume[row]), **bar_of(bar, at)}
            item["updated"] = start_ns + 59 * NS_PER_SECOND  # within its last minute
            if before is not None and before["c"]:
                change = close - float(before["c"])
                item["todaysChange"] = round(change, 4)
                item["todaysChangePerc"] = round(100 * change / float(before["c"]), 4)
            out.append(item)
        return out

    def status_at(self, ts_ns: int) -> str:
        """``open``, ``extended-hours`` or ``closed``, from the calendar."""
        calendar = self.calendar
        times = calendar.session_in_progress(ts_ns)
        if times is None:
            return "closed"
        regular = times.regular_open_ns <= ts_ns < times.regular_close_ns
        return "open" if regular else "extended-hours"

    # ------------------------------------------------------------------ the socket

    async def serve_socket(self, server: FakeMassive, clock: Clock, start_ns: int) -> None:
        """The simulated feed's live aggregates from ``start_ns``, to every subscriber."""
        to_correct: AggregateBatch | None = None  # the last minute, sent as ``preliminary``
        seconds = 0
        async for event in self.source.live().events(clock, start_ns):
            if isinstance(event, AggregateBatch) and event.kind is AggregateKind.MINUTE:
                day = self.calendar.trading_day(event.ts_event_ns - 1)
                self.today.add(day, event)
            if isinstance(event, FeedStatus) or event.ts_event_ns <= start_ns:
                continue  # a socket has no past
            if self.drop_at_ns is not None and event.ts_event_ns > self.drop_at_ns:
                self.drop_at_ns = None
                server.drop_all()
            if isinstance(event, HaltEvent | BandBatch):
                await _publish(server, self.luld_frames(event))
                continue
            if not self.corrections:
                await _publish(server, self.frames(event))
            elif event.kind is AggregateKind.MINUTE:
                await _publish(server, self.frames(preliminary(event)))
                if to_correct is not None:
                    await _publish(server, self.frames(to_correct, resent=True) * 2)
                to_correct = event
                day = self.calendar.trading_day(event.ts_event_ns - 1)
                if event.ts_event_ns >= self.calendar.session(day).post_close_ns:
                    # the session's last minute: no next one comes, its correction a minute on
                    await clock.sleep_until(event.ts_event_ns + MINUTE_MS * NS_PER_MS)
                    await _publish(server, self.frames(to_correct, resent=True) * 2)
                    to_correct = None
            else:
                seconds += 1
                await _publish(server, self.frames(event) * (2 if seconds % 10 == 0 else 1))

    def luld_frames(self, event: HaltEvent | BandBatch) -> list[bytes]:
        """Bands as LULD price-band messages; a halt or its end as an LULD message with the
        halt or reopening indicator and the symbol's last bands."""
        day = self.calendar.trading_day(event.ts_event_ns)
        if day != self._luld_day:  # bands are a day's: a halt before the first has none
            self._upper.fill(0.0)
            self._lower.fill(0.0)
            self._luld_day = day
        if isinstance(event, HaltEvent):
            row = event.symbol_index
            code = LULD_HALT if event.halted else LULD_REOPEN
            rows, codes = [row], [code]
            upper, lower = [float(self._upper[row])], [float(self._lower[row])]
        else:
            rows = event.symbol_index.tolist()
            codes = [LULD_BAND] * len(rows)
            self._upper[event.symbol_index] = event.upper
            self._lower[event.symbol_index] = event.lower
            upper, lower = event.upper.tolist(), event.lower.tolist()
        messages = []
        for row, code, high, low in zip(rows, codes, upper, lower, strict=True):
            self._luld_sequence += 1
            messages.append(
                Luld(
                    "LULD",
                    self.symbols[row],
                    high,
                    low,
                    [code],
                    3,
                    event.ts_event_ns,
                    self._luld_sequence,
                )
            )
        return [
            _encode(messages[i : i + FRAME_MESSAGES])
            for i in range(0, len(messages), FRAME_MESSAGES)
        ]

    def frames(self, batch: AggregateBatch, resent: bool = False) -> list[bytes]:
        """``batch`` as socket frames of A (per-second) or AM (per-minute) messages (``resent``:
        again, so the day's accumulated volume does not count it twice)."""
        day = self.calendar.trading_day(int(batch.start_ns[0])) if len(batch) else None
        if day != self._volume_day:
            self._day_volume[:] = 0
            self._volume_day = day
        counts = not resent and batch.kind is (
            AggregateKind.SECOND if self.second_aggregates else AggregateKind.MINUTE
        )
        if counts:
            np.add.at(self._day_volume, batch.symbol_index, batch.volume)
        ev = "A" if batch.kind is AggregateKind.SECOND else "AM"
        window_ms = int(batch.kind) * NS_PER_SECOND // NS_PER_MS
        starts = (batch.start_ns // NS_PER_MS).tolist()
        trades = batch.trades.tolist()
        volumes = batch.volume.tolist()
        day_volume = self._day_volume[batch.symbol_index].tolist()
        messages = [
            Aggregate(
                ev=ev,
                sym=self.symbols[row],
                v=volume,
                av=accumulated,
                vw=round(vwap, 4),
                o=o,
                c=c,
                h=h,
                l=low,
                z=volume // count if count > 0 else 0,
                s=start,
                e=start + window_ms,
            )
            for row, volume, accumulated, vwap, o, c, h, low, count, start in zip(
                batch.symbol_index.tolist(),
                volumes,
                day_volume,
                batch.vwap.tolist(),
                batch.open.tolist(),
                batch.close.tolist(),
                batch.high.tolist(),
                batch.low.tolist(),
                trades,
                starts,
                strict=True,
            )
        ]
        return [
            _encode(messages[i : i + FRAME_MESSAGES])
            for i in range(0, len(messages), FRAME_MESSAGES)
        ]


async def _publish(server: FakeMassive, frames: list[bytes]) -> None:
    for frame in frames:
        await server.publish(frame)


def _close_ms(day: dt.date) -> int:
    """Grouped daily bars carry 16:00 ET of their day in ms (the end of the window)."""
    close = dt.datetime.combine(day, dt.time(16), tzinfo=_ET)
    return int(close.timestamp() * 1000)


def cursor_of(offset: int, kind: str | None) -> str:
    raw = json.dumps({"offset": offset, "type": kind or ""}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def offset_of(cursor: str) -> tuple[int, str]:
    """(offset, type) of a cursor; ValueError when it is not one of ours."""
    padded = cursor + "=" * (-len(cursor) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    offset, kind = data["offset"], data["type"]
    if not isinstance(offset, int) or offset < 0 or not isinstance(kind, str):
        raise ValueError("not a cursor")
    return offset, kind
