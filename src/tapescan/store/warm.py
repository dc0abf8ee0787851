"""Start-up from the store: warm-up history and, mid-session, today's state so far.

With these a restart continues where the last process stopped: previous closes, ATR, average
volume and the RVOL baseline come from stored daily bars and slot profiles, and today's volume,
HOD/LOD, VWAP and open come from today's stored minute bars, applied to state exactly as the
feed delivered them. The feed then resumes after the last stored minute.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tapescan.feeds.history import (
    DAILY_HISTORY_SESSIONS,
    MINUTE_HISTORY_SESSIONS,
    SLOTS_PER_DAY,
    Warmup,
    WarmupSession,
)
from tapescan.market.calendar import MarketCalendar, SessionTimes, ns_to_utc
from tapescan.model import NS_PER_MINUTE, AggregateBatch, AggregateKind, Universe
from tapescan.store.base import Store
from tapescan.store.records import fill_slot_volume
from tapescan.store.tables import DAILY_BARS, MINUTE_BARS, SLOT_VOLUME, SYMBOLS


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """Which of the warm-up sessions of ``session`` the store holds."""

    session: dt.date
    wanted: list[dt.date]  # the 40 sessions before, oldest first
    needed: list[dt.date]  # the last 10 of them: the RVOL baseline's slot profiles
    daily: frozenset[dt.date]  # those with daily bars stored
    slots: frozenset[dt.date]  # of ``needed``, those with a slot profile stored

    @property
    def complete(self) -> bool:
        """Warm up from the store alone: it holds slot profiles of each of the 10 sessions
        before and daily bars of the session before (daily bars of up to 40 are used)."""
        return set(self.needed) <= self.slots and self.needed[-1] in self.daily

    @property
    def missing(self) -> list[dt.date]:
        """The sessions the store lacks (daily bars, or a slot profile of the last 10), to be
        asked of the feed, oldest first."""
        needed = set(self.needed)
        return [
            day
            for day in self.wanted
            if day not in self.daily or (day in needed and day not in self.slots)
        ]

    @property
    def stored(self) -> list[dt.date]:
        """The sessions the store holds whole, oldest first."""
        missing = set(self.missing)
        return [day for day in self.wanted if day not in missing]


def stored_history(store: Store, calendar: MarketCalendar, session: dt.date) -> StoredHistory:
    """What the store holds of ``session``'s warm-up (two DISTINCT reads)."""
    wanted = calendar.previous_sessions(session, DAILY_HISTORY_SESSIONS)
    needed = wanted[-MINUTE_HISTORY_SESSIONS:]
    slots = _dates(store, "slot_volume", "session", needed[0], session)
    days = _dates(store, "daily_bars", "date", wanted[0], session)
    return StoredHistory(session, wanted, needed, frozenset(days), frozenset(slots) & set(needed))


def warmup_from_store(
    store: Store,
    universe: Universe,
    history: StoredHistory,
    on_step: Callable[[int, int], None] | None = None,
    sessions: list[dt.date] | None = None,
) -> Warmup:
    """The warm-up sessions the store holds (of ``sessions`` only, when given), read one at a
    time (at 11,882 symbols ~9 MB of slot profiles or ~0.7 MB of daily bars each), without
    sorting in the store: the embedded store's 16 MB buffer pool, shared with the recorder
    writing back what it spilled, never has to hold the whole history at once."""
    days = sorted(history.daily if sessions is None else history.daily & set(sessions))
    needed = [day for day in history.needed if day in history.slots]
    if sessions is not None:
        needed = [day for day in needed if day in sessions]
    return Warmup(history.session, _sessions(store, universe, needed, days, on_step))


def with_fetched(stored: Warmup, fetched: Iterable[WarmupSession]) -> Warmup:
    """The stored sessions and those fetched from the feed (both oldest first) as one warm-up,
    oldest first, each read when the warm-up gets to it (two sessions in memory at most)."""
    merged = heapq.merge(stored.sessions, fetched, key=lambda item: item.date)
    return Warmup(stored.session, merged)


def _sessions(
    store: Store,
    universe: Universe,
    needed: list[dt.date],
    days: list[dt.date],
    on_step: Callable[[int, int], None] | None,
) -> Iterator[WarmupSession]:
    """Each session's daily bars and slot profile, read when the warm-up gets to it."""
    sessions = sorted(set(needed) | set(days))
    for done, day in enumerate(sessions, start=1):
        daily = DAILY_BARS.schema.empty_table()
        if day in days:
            daily = store.read(
                "SELECT date, symbol, open, high, low, close, volume FROM daily_bars "
                "WHERE date = %s",
                [day],
                DAILY_BARS.schema,
            ).sort_by("symbol")
        slots = None
        if day in needed:
            slots = np.zeros((len(universe), SLOTS_PER_DAY), dtype=np.uint32)
            store.read_batches(  # streamed: a session's 9 MB of rows never at once
                "SELECT session, symbol, volume FROM slot_volume WHERE session = %s",
                [day],
                SLOT_VOLUME.schema,
                functools.partial(fill_slot_volume, slots, universe=universe),
            )
        if on_step is not None:
            on_step(done, len(sessions))
        yield WarmupSession(day, daily, slots)


def _dates(store: Store, table: str, column: str, first: dt.date, before: dt.date) -> list[dt.date]:
    """The sessions ``table`` holds in [first, before), oldest first."""
    found = store.read(
        f"SELECT DISTINCT {column} AS day FROM {table} WHERE {column} >= %s AND {column} < %s",
        [first, before],
        pa.schema([("day", pa.date32())]),
    )
    return sorted(found.column("day").to_pylist())


TODAY_READ_MINUTES = 10  # today's bars are read back this many minutes at a time


def today_from_store(
    store: Store,
    session: dt.date,
    universe: Universe,
    times: SessionTimes,
    until_ns: int,
    minutes: int = TODAY_READ_MINUTES,
) -> Iterator[AggregateBatch]:
    """Today's stored minute bars that ended by ``until_ns``, a few minutes per batch, in order.

    Read a slice of time at a time with no ORDER BY: a whole universe's day (about 5 million
    bars at 11,882 symbols) never has to fit in the store's buffer pool or in this process at
    once; each batch holds at most ``minutes`` x symbols rows (~120,000, ~10 MB).
    """
    step = minutes * NS_PER_MINUTE
    last_start = until_ns - NS_PER_MINUTE  # bars that have ended by ``until_ns``
    for begin in range(times.pre_open_ns, last_start + 1, step):
        bars = store.read(
            "SELECT session, symbol, ts, open, high, low, close, volume, vwap, trades "
            "FROM minute_bars WHERE session = %s AND ts >= %s AND ts < %s",
            [session, ns_to_utc(begin), ns_to_utc(min(begin + step, last_start + 1_000))],
            MINUTE_BARS.schema,
        )
        batch = _batch(bars, universe)
        if batch is not None:
            yield batch


def _batch(bars: pa.Table, universe: Universe) -> AggregateBatch | None:
    rows = universe.indices_of(bars.column("symbol").to_pylist())
    known = rows >= 0
    if not known.any():
        return None

    def column(name: str, dtype: type[np.generic], fill: float = np.nan) -> np.ndarray:
        values = bars.column(name)
        if values.null_count:
            values = values.fill_null(fill)
        return np.asarray(values.to_numpy(), dtype=dtype)[known]

    start_us = bars.column("ts").cast(pa.int64()).to_numpy()
    close = column("close", np.float64)
    vwap = column("vwap", np.float64)
    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=rows[known],
        start_ns=(start_us * 1000)[known],
        open=column("open", np.float64),
        high=column("high", np.float64),
        low=column("low", np.float64),
        close=close,
        volume=column("volume", np.int64),
        vwap=np.where(np.isnan(vwap), close, vwap),
        trades=column("trades", np.int32, 0).astype(np.int32),
    )


def last_sequences(store: Store, session: dt.date) -> dict[str, int]:
    """The last recorded sequence number of every scan in ``session``."""
    table = store.read(
        "SELECT scan, max(seq) AS seq FROM scan_events WHERE session = %s GROUP BY scan",
        [session],
        pa.schema([("scan", pa.string()), ("seq", pa.int64())]),
    )
    return dict(zip(table.column("scan").to_pylist(), table.column("seq").to_pylist(), strict=True))


def stored_details(store: Store, day: dt.date) -> pa.Table:
    """The symbols whose reference details were taken on ``day`` (SYMBOLS rows)."""
    columns = ", ".join(SYMBOLS.columns)
    return store.read(f"SELECT {columns} FROM symbols WHERE updated = %s", [day], SYMBOLS.schema)
