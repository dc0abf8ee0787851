import datetime as dt
from collections import defaultdict

import numpy as np
import pytest

from tapescan.feeds.history import DAILY_HISTORY_SESSIONS, MINUTE_HISTORY_SESSIONS
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.market.clock import FastClock, SimulatedClock
from tapescan.model import (
    AggregateBatch,
    AggregateKind,
    FeedEvent,
    FeedState,
    FeedStatus,
    HaltEvent,
)
from tests.warmups import gathered

CAL = market_calendar()
DAY = dt.date(2026, 11, 20)


async def collect(
    feed: SimFeed, clock: FastClock | SimulatedClock, start_ns: int, end_ns: int
) -> list[FeedEvent]:
    return [event async for event in feed.events(clock, start_ns, end_ns)]


async def test_per_second_batches_add_up_to_the_minute_batches_in_time_order() -> None:
    feed = SimFeed(SimMarket(1, 300, CAL))
    start = et_to_ns(DAY, dt.time(9, 30))
    events = await collect(feed, FastClock(start), start, et_to_ns(DAY, dt.time(9, 40)))
    batches = [e for e in events if isinstance(e, AggregateBatch) and len(e)]
    assert [e.ts_event_ns for e in batches] == sorted(e.ts_event_ns for e in batches)
    seconds: dict[tuple[int, int], int] = defaultdict(int)
    minutes: dict[tuple[int, int], int] = {}
    for batch in batches:
        minute_start = batch.start_ns // 60_000_000_000 * 60_000_000_000
        for symbol, volume, begin in zip(
            batch.symbol_index, batch.volume, minute_start, strict=True
        ):
            if batch.kind is AggregateKind.SECOND:
                seconds[int(symbol), int(begin)] += int(volume)
            else:
                minutes[int(symbol), int(begin)] = int(volume)
    live = {key: volume for key, volume in minutes.items() if key[1] >= start}
    assert len(live) > 1000
    assert dict(seconds) == live


async def test_minutes_before_the_start_are_caught_up_at_once_without_seconds() -> None:
    feed = SimFeed(SimMarket(1, 200, CAL))
    start = et_to_ns(DAY, dt.time(10, 0))
    clock = SimulatedClock(start, speed=600.0)
    events = await collect(feed, clock, start, et_to_ns(DAY, dt.time(10, 2)))
    batches = [e for e in events if isinstance(e, AggregateBatch)]
    before = [b for b in batches if b.ts_event_ns and b.ts_event_ns <= start]
    assert {b.kind for b in before} == {AggregateKind.MINUTE}
    assert len(before) == 6 * 60  # every minute from 04:00
    after = [b for b in batches if b.ts_event_ns > start]
    assert {b.kind for b in after} == {AggregateKind.MINUTE, AggregateKind.SECOND}
    assert clock.now_ns() >= max(b.ts_event_ns for b in after)
    assert isinstance(events[0], FeedStatus)
    assert events[0].state is FeedState.LIVE
    assert isinstance(events[-1], FeedStatus)
    assert events[-1].state is FeedState.ENDED


async def test_halts_are_announced_and_the_symbol_does_not_trade_until_it_resumes() -> None:
    market = SimMarket(11, 6000, CAL)
    day = dt.date(2026, 11, 20)
    plan = market.plan(day)
    rows = np.flatnonzero(plan.halt_start >= 0)
    assert len(rows) > 0
    row = int(rows[0])
    halt_at = CAL.session(day).regular_open_ns + int(plan.halt_start[row]) * 60_000_000_000
    feed = SimFeed(market, second_aggregates=False)
    start = halt_at - 2 * 60_000_000_000
    events = await collect(feed, FastClock(start), start, halt_at + 8 * 60_000_000_000)
    halts = [e for e in events if isinstance(e, HaltEvent) and e.symbol_index == row]
    assert [(h.halted, h.ts_event_ns) for h in halts] == [
        (True, halt_at),
        (False, halt_at + 5 * 60_000_000_000),
    ]
    traded = [
        int(b.start_ns[0])
        for b in events
        if isinstance(b, AggregateBatch) and len(b) and row in b.symbol_index.tolist()
    ]
    assert not [t for t in traded if halt_at <= t < halt_at + 5 * 60_000_000_000]


def test_warmup_has_40_sessions_of_daily_bars_and_slot_volume_of_the_last_10() -> None:
    market = SimMarket(2, 80, CAL)
    feed = SimFeed(market)
    steps: list[tuple[int, int]] = []
    warmup = feed.warmup(DAY, on_step=lambda done, total: steps.append((done, total)))
    assert not steps  # nothing is drawn before the warm-up is read
    warmup_daily, slot_volume = gathered(warmup)
    sessions = CAL.previous_sessions(DAY, DAILY_HISTORY_SESSIONS)
    assert sorted(set(warmup_daily.column("date").to_pylist())) == sessions
    assert list(slot_volume) == sessions[-MINUTE_HISTORY_SESSIONS:]
    # One step per 30-minute chunk of each simulated session (32 a full day): fine enough for a
    # progress bar and for a stop request to be noticed within ~0.1 s at full size.
    modelled = DAILY_HISTORY_SESSIONS - MINUTE_HISTORY_SESSIONS  # a step each, then a chunk each
    total = modelled + sum(CAL.session(d).extended_minutes // 30 for d in slot_volume)
    assert [done for done, _ in steps if done] == list(range(1, total + 1))  # 0: preparing
    assert {t for _, t in steps} == {total}
    assert total >= 30 * MINUTE_HISTORY_SESSIONS
    last = sessions[-1]
    daily = warmup_daily.filter(np.array(warmup_daily.column("date").to_pylist()) == last)
    order = [market.universe.index_of(s) for s in daily.column("symbol").to_pylist()]
    assert np.array_equal(slot_volume[last].sum(axis=1)[order], daily.column("volume").to_numpy())


@pytest.mark.parametrize("late", [dt.time(20, 30), dt.time(23, 59)])
async def test_a_start_after_the_post_market_begins_with_the_next_session(late: dt.time) -> None:
    feed = SimFeed(SimMarket(1, 50, CAL), second_aggregates=False)
    start = et_to_ns(dt.date(2026, 11, 25), late)
    end = et_to_ns(dt.date(2026, 11, 27), dt.time(4, 5))
    events = await collect(feed, FastClock(start), start, end)
    bars = [b for b in events if isinstance(b, AggregateBatch) and len(b)]
    assert bars
    assert min(int(b.start_ns[0]) for b in bars) == et_to_ns(dt.date(2026, 11, 27), dt.time(4, 0))
