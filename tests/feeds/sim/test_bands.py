"""The simulator's LULD bands: published from the regular open to the close, around the mean
close of the last five minutes, again only when that moves 1%, as wide as the price tier says."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np

from tapescan.feeds.sim.bands import BandPublisher, band_half_width
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.market.clock import FastClock
from tapescan.model import NS_PER_MINUTE, AggregateBatch, AggregateKind, BandBatch

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)


def minute(start_ns: int, closes: list[float]) -> AggregateBatch:
    n = len(closes)
    price = np.array(closes)
    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=np.arange(n, dtype=np.int32),
        start_ns=np.full(n, start_ns, dtype=np.int64),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=np.full(n, 100, dtype=np.int64),
        vwap=price,
        trades=np.ones(n, dtype=np.int32),
    )


def test_bands_follow_the_five_minute_reference_and_move_only_on_one_percent() -> None:
    publisher = BandPublisher(3)
    first = publisher.after_minute(minute(0, [10.0, 2.0, 0.5]))
    assert first is not None
    assert first.symbol_index.tolist() == [0, 1, 2]
    assert first.upper.tolist() == [11.0, 2.4, 0.65]  # 10%, 20%, min($0.15, 75%)
    assert first.lower.tolist() == [9.0, 1.6, 0.35]
    assert publisher.after_minute(minute(NS_PER_MINUTE, [10.1, 2.0, 0.5])) is None  # 0.5%
    moved = publisher.after_minute(minute(2 * NS_PER_MINUTE, [10.5, 2.0, 0.5]))
    assert moved is not None  # mean of 10, 10.1, 10.5 = 10.2: 2% from 10
    assert moved.symbol_index.tolist() == [0]
    assert moved.upper.tolist() == [round(10.2 * 1.1, 2)]
    for k in range(3, 9):  # the oldest minutes leave the mean
        publisher.after_minute(minute(k * NS_PER_MINUTE, [20.0, 2.0, 0.5]))
    assert publisher._published[0] == 20.0
    assert np.allclose(band_half_width(np.array([0.1, 1.0, 100.0])), [0.075, 0.2, 10.0])


def test_the_simulated_feed_publishes_bands_in_regular_hours_only() -> None:
    market = SimMarket(7, 60, CAL)
    start, end = et_to_ns(DAY, dt.time(9, 0)), et_to_ns(DAY, dt.time(10, 0))
    bands: list[BandBatch] = []
    bars: dict[int, AggregateBatch] = {}

    async def run() -> None:
        feed = SimFeed(market, second_aggregates=False)
        async for event in feed.events(FastClock(start), start, end_ns=end):
            if isinstance(event, BandBatch):
                bands.append(event)
            elif isinstance(event, AggregateBatch):
                bars[event.ts_event_ns] = event

    asyncio.run(run())
    regular_open = CAL.session(DAY).regular_open_ns
    assert bands
    assert min(b.ts_event_ns for b in bands) == regular_open + NS_PER_MINUTE
    for batch in bands:
        assert batch.ts_event_ns in bars  # at the end of a minute bar, for symbols in it
        assert set(batch.symbol_index.tolist()) <= set(
            bars[batch.ts_event_ns].symbol_index.tolist()
        )
        assert (batch.lower > 0).all()
        assert (batch.upper > batch.lower).all()
    first = bands[0]  # every symbol that traded the first regular minute, around its close
    opening = bars[regular_open + NS_PER_MINUTE]
    assert first.symbol_index.tolist() == opening.symbol_index.tolist()
    close = opening.close
    assert np.allclose(first.upper - close, band_half_width(close), atol=0.006)


def bands_by_row(batch: BandBatch) -> dict[int, tuple[float, float]]:
    pairs = zip(batch.upper.tolist(), batch.lower.tolist(), strict=True)
    return dict(zip(batch.symbol_index.tolist(), pairs, strict=True))


def test_a_resumed_feed_publishes_the_bands_an_unbroken_one_has() -> None:
    market = SimMarket(7, 60, CAL)
    start, resume = et_to_ns(DAY, dt.time(9, 0)), et_to_ns(DAY, dt.time(10, 30))

    async def bands_of(resume_ns: int | None) -> list[BandBatch]:
        found = []
        feed = SimFeed(market, second_aggregates=False)
        clock = FastClock(resume if resume_ns else start)
        async for event in feed.events(
            clock, clock.now_ns(), resume + 10 * NS_PER_MINUTE, resume_ns
        ):
            if isinstance(event, BandBatch):
                found.append(event)
        return found

    unbroken, resumed = asyncio.run(bands_of(None)), asyncio.run(bands_of(resume))
    last: dict[int, tuple[float, float]] = {}
    for batch in unbroken:
        if batch.ts_event_ns <= resume:
            last.update(bands_by_row(batch))
    first = resumed[0]
    assert first.ts_event_ns == resume
    assert bands_by_row(first) == last
    after = [b for b in unbroken if b.ts_event_ns > resume]
    assert [b.ts_event_ns for b in resumed[1:]] == [b.ts_event_ns for b in after]
    for ours, theirs in zip(resumed[1:], after, strict=True):
        assert ours.symbol_index.tolist() == theirs.symbol_index.tolist()
        assert ours.upper.tolist() == theirs.upper.tolist()
