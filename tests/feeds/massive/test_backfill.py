"""The minutes the socket did not deliver come from REST: today's before a start, a drop's gap.

The fake (a real process, 300 symbols, its clock 10x) serves from 10:00 ET and cuts the first
connection without a close frame (1006) after 40 frames. The feed runs in this process on a
clock in step with the fake's; its events go into a MarketState. When the start's and the
drop's gaps are both filled, the state after the next minute bar from the socket must equal a
state fed only the simulator's own minute bars up to that minute: no minute missing, none
counted twice, the per-second bars of every minute superseded by its minute bar.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from tapescan.feeds.massive.backfill import Gap, queue
from tapescan.feeds.massive.feed import MassiveConfig, MassiveFeed
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.market.clock import FastClock, SimulatedClock
from tapescan.model import AggregateBatch, AggregateKind, FeedStatus
from tapescan.state.market_state import MarketState
from tests.feeds.massive.fake_process import KEY, FakeProcess
from tests.state.test_upsert import EXACT

pytestmark = pytest.mark.slow
SESSION = dt.date(2026, 11, 24)
SPEED = 10.0
SYMBOLS = 300
# What minute bars decide (the rolling one-minute volume is made of the socket's seconds, and
# the last event's instant is a second's end where the socket brought seconds).
COLUMNS = tuple(c for c in EXACT if c not in ("last_event_ns", "volume_1m", "second_volume"))


async def follow(feed: MassiveFeed, start_ns: int, state: MarketState) -> tuple[int, list[str]]:
    """Apply the feed's events until both gaps are filled and a minute bar from the socket
    follows; returns that bar's end and the feed's status messages."""
    clock = SimulatedClock(start_ns, SPEED)
    messages: list[str] = []
    filled: set[str] = set()
    events = feed.events(clock, start_ns)
    try:
        async with asyncio.timeout(120):
            async for event in events:
                if isinstance(event, FeedStatus):
                    messages.append(event.message)
                    if " filled from REST" in event.message:
                        filled.add(event.message.split(" ", 2)[1])  # "minute" or "reconnect's"
                    continue
                if not isinstance(event, AggregateBatch):
                    continue
                state.apply(event)
                # after the gaps' last bars, a minute bar can only come from the socket
                if filled == {"minute", "reconnect's"} and event.kind is AggregateKind.MINUTE:
                    return event.ts_event_ns, messages
    finally:
        await events.aclose()
    raise AssertionError(f"the feed ended first: {messages}")


def test_a_start_and_a_drop_are_filled_from_rest_with_every_minute_once(tmp_path: Path) -> None:
    fake = FakeProcess(tmp_path, "--drop-after", "40", "--speed", str(SPEED), symbols=SYMBOLS)
    try:
        calendar = market_calendar()
        config = MassiveConfig(
            api_key=KEY,
            ws_url=fake.settings["TAPESCAN_MASSIVE_WS_URL"],
            rest_url=fake.rest_url,
        )
        feed = MassiveFeed.open(config, calendar)
        start_ns = int(dt.datetime.fromisoformat(fake.now()).timestamp() * 1e9)
        state = MarketState(feed.universe, calendar, SESSION)
        end_ns, messages = asyncio.run(follow(feed, start_ns, state))
    finally:
        fake.stop()
    assert "Massive stocks feed live again" in messages
    socket = feed.connection()["socket"]
    assert socket["drops"]["closed 1006"] == 1  # (and 1000: this test closing it)
    backfill = feed.connection()["backfill"]
    assert backfill["gaps"] == 2
    assert backfill["failed"] == 0
    assert backfill["requests"] == 2 * SYMBOLS
    assert feed.rest_counters.by_path["/v2/aggs/ticker"] == 2 * SYMBOLS

    market = SimMarket(7, SYMBOLS, calendar)
    expected = MarketState(market.universe, calendar, SESSION)

    async def replay() -> None:
        # a start at end_ns catches up minute bars only, none after end_ns
        async for event in SimFeed(market).events(FastClock(end_ns), end_ns, end_ns=end_ns):
            if isinstance(event, AggregateBatch):
                expected.apply(event)

    asyncio.run(replay())
    state.advance_to(end_ns)
    expected.advance_to(end_ns)
    rows = feed.universe.indices_of(market.universe.symbols)
    assert expected.volume.sum() > 0
    assert int(state.volume[rows].sum()) == int(expected.volume.sum())
    for name in COLUMNS:
        axis = 0 if name == "slot_volume" else -1  # the symbol's axis
        ours = np.take(getattr(state, name), rows, axis=axis)
        np.testing.assert_array_equal(ours, getattr(expected, name), err_msg=name)
    np.testing.assert_allclose(state.dollar_volume[rows], expected.dollar_volume, rtol=1e-9)


def test_gaps_that_come_while_others_wait_join_them() -> None:
    """A socket that drops in a loop while a backfill runs queues one gap, not one per drop."""
    minute = 60 * 10**9
    gaps: deque[Gap] = deque()
    queue(gaps, Gap(0, 2 * minute, "start"))
    for k in range(100):
        queue(gaps, Gap((10 + k) * minute, (12 + k) * minute, "reconnect"))
    assert list(gaps) == [Gap(0, 2 * minute, "start"), Gap(10 * minute, 111 * minute, "reconnect")]
    queue(gaps, Gap(3 * 86_400 * 10**9, 3 * 86_400 * 10**9 + minute, "reconnect"))  # days later
    assert len(gaps) == 3
