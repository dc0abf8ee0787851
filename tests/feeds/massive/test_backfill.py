"""The minutes the socket did not deliver come from REST: today's before a start, a fault's gap.

The fake (a real process, 300 symbols, its clock 10x) serves from 10:00 ET with one fault: the
first connection left open but silent after 40 frames (a stall, noticed after STALE_S); or no
drop but every minute bar sent short of its late trades and corrected twice a minute later,
every tenth second's bars sent twice, and a malformed frame after every fifth; or a start at
04:20 ET, when the full-market snapshot shows half the tickers quiet (not asked); or a snapshot
of the wrong shape (every ticker asked). (A drop without
a close frame, 1006, is tests/feeds/massive/test_full_session.py's, through the whole node.) The feed runs in this process on a clock in step with the
fake's; its events go into a MarketState. When the gaps are filled and the next minute bar from
the socket has come, the state must equal a state fed only the simulator's own minute bars up
to that minute: no minute missing, none counted twice, no preliminary value left, the
per-second bars of every minute superseded by its minute bar, nothing malformed in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tapescan.feeds.massive.backfill import Gap, Handover, queue
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
STALE_S = 2.0  # the socket's silence that ends a stalled session (real seconds)
# What minute bars decide (the rolling one-minute volume is made of the socket's seconds, and
# the last event's instant is a second's end where the socket brought seconds).
COLUMNS = tuple(c for c in EXACT if c not in ("last_event_ns", "volume_1m", "second_volume"))


@dataclass(frozen=True, slots=True)
class Fault:
    args: tuple[str, ...]
    gaps: frozenset[str]  # the gaps filled from REST ("minute": today's, "reconnect's")
    drop: str | None  # how the socket's first session ends
    corrected: bool = False  # minute bars come short first, corrected a minute later
    quiet: bool = False  # the full-market snapshot shows tickers with no trade in a gap


FAULTS = {
    "stall": Fault(
        ("--stall-after", "40"),
        frozenset({"minute", "reconnect's"}),
        f"no frames for {STALE_S:g} s",
    ),
    "corrections": Fault(
        ("--corrections", "--malformed-every", "5"), frozenset({"minute"}), None, corrected=True
    ),
    # 04:20 ET: about half the tickers have not traded yet today; the snapshot says which,
    # and those are not asked
    "early": Fault(
        ("--start", "2026-11-24T09:20:00+00:00"), frozenset({"minute"}), None, quiet=True
    ),
    # a snapshot of the wrong shape: every ticker is asked, as without one
    "bad snapshot": Fault(("--bad-snapshot",), frozenset({"minute"}), None),
}


@dataclass(slots=True)
class Followed:
    head_ns: int = 0  # the start of the newest minute bar applied
    messages: list[str] = field(default_factory=list)
    seconds: list[AggregateBatch] = field(default_factory=list)  # per-second bars applied


async def follow(feed: MassiveFeed, start_ns: int, state: MarketState, fault: Fault) -> Followed:
    """Apply the feed's events until the fault's gaps are filled and a minute bar from the
    socket follows (with corrections: the correction of a minute bar older than the newest)."""
    clock = SimulatedClock(start_ns, SPEED)
    seen = Followed()
    filled: set[str] = set()
    events = feed.events(clock, start_ns)
    try:
        async with asyncio.timeout(120):
            async for event in events:
                if isinstance(event, FeedStatus):
                    seen.messages.append(event.message)
                    if " filled from REST" in event.message:
                        filled.add(event.message.split(" ", 2)[1])  # "minute" or "reconnect's"
                    continue
                if not isinstance(event, AggregateBatch):
                    continue
                state.apply(event)
                if event.kind is AggregateKind.SECOND:
                    seen.seconds.append(event)
                    continue
                newest = max(seen.head_ns, int(event.start_ns.max()))
                correction = int(event.start_ns.min()) < newest
                seen.head_ns = newest
                # after the gaps' last bars, a minute bar can only come from the socket
                if filled == fault.gaps and (correction or not fault.corrected):
                    return seen
    finally:
        await events.aclose()
    raise AssertionError(f"the feed ended first: {seen.messages}")


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_start_and_a_socket_fault_end_with_every_minute_once(tmp_path: Path, name: str) -> None:
    fault = FAULTS[name]
    fake = FakeProcess(tmp_path, *fault.args, "--speed", str(SPEED), symbols=SYMBOLS)
    try:
        calendar = market_calendar()
        config = MassiveConfig(
            api_key=KEY,
            ws_url=fake.settings["TAPESCAN_MASSIVE_WS_URL"],
            rest_url=fake.rest_url,
            stale_after_s=STALE_S,
        )
        feed = MassiveFeed.open(config, calendar)
        start_ns = int(dt.datetime.fromisoformat(fake.now()).timestamp() * 1e9)
        state = MarketState(feed.universe, calendar, SESSION)
        seen = asyncio.run(follow(feed, start_ns, state, fault))
    finally:
        fake.stop()
    socket = feed.connection()["socket"]
    backfill = feed.connection()["backfill"]
    assert backfill["gaps"] == len(fault.gaps)
    assert backfill["failed"] == 0
    asked = feed.rest_counters.by_path["/v2/aggs/ticker"]
    assert feed.rest_counters.by_path["/v2/snapshot"] == len(fault.gaps)  # one a gap
    assert backfill["requests"] == asked + len(fault.gaps)
    assert asked == len(fault.gaps) * SYMBOLS - backfill["quiet"]
    if fault.quiet:
        assert backfill["quiet"] > SYMBOLS / 4
    if "--bad-snapshot" in fault.args:
        assert backfill["snapshot_failures"] == 1
        assert backfill["quiet"] == 0
    else:
        assert backfill["snapshot_failures"] == 0
    if fault.drop is not None:
        assert "Massive stocks feed live again" in seen.messages
        assert socket["drops"][fault.drop] == 1  # (and 1000: this test closing it)
    else:
        assert socket["reconnects"] == 0
    if "--malformed-every" in fault.args:
        # one of each malformed kind at least: not JSON, not a list, wrong types, missing
        # fields, an unknown event and symbol, an inconsistent bar (refused by the state)
        assert socket["malformed_frames"] >= 2
        assert socket["malformed_messages"] >= 4
        assert socket["skipped_events"] >= 1
        assert socket["unknown_symbols"] >= 1
        assert state.counters.inconsistent_bar >= 1

    market = SimMarket(7, SYMBOLS, calendar)
    expected = MarketState(market.universe, calendar, SESSION)
    end_ns = seen.head_ns + 60 * 10**9
    truth: list[AggregateBatch] = []

    async def replay() -> None:
        # a start at end_ns catches up minute bars only, none after end_ns
        async for event in SimFeed(market).events(FastClock(end_ns), end_ns, end_ns=end_ns):
            if isinstance(event, AggregateBatch):
                truth.append(event)

    asyncio.run(replay())
    for batch in truth:
        expected.apply(batch)
    rows = feed.universe.indices_of(market.universe.symbols)  # the simulator's in the feed's
    if fault.corrected:  # the newest minute's correction is the next to come: the truth's
        head = truth[-1]
        state.apply(dataclasses.replace(head, symbol_index=rows[head.symbol_index]))
    # per-second bars that came after the newest minute bar (in the same read) are the
    # simulator's own too
    for batch in seen.seconds:
        if int(batch.start_ns.min()) >= end_ns:
            expected.apply(batch)
    latest = max([end_ns, *(b.ts_event_ns for b in seen.seconds)])
    state.advance_to(latest)
    expected.advance_to(latest)
    assert expected.volume.sum() > 0
    assert int(state.volume[rows].sum()) == int(expected.volume.sum())
    for column in COLUMNS:
        axis = 0 if column == "slot_volume" else -1  # the symbol's axis
        ours = np.take(getattr(state, column), rows, axis=axis)
        np.testing.assert_array_equal(ours, getattr(expected, column), err_msg=column)
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


def test_a_socket_whose_first_minute_bars_start_late_leaves_a_hole_asked_of_rest() -> None:
    """The server's clock ahead of ours: the live minute's bars went out before the
    subscription, so the socket's first minute bars are the next minute's."""
    minute = 60 * 10**9
    handover = Handover()
    assert handover.hole(np.array([5 * minute])) is None  # nothing expected yet
    handover.expect(10 * minute, "start", 100 * minute)
    assert handover.hole(np.array([8 * minute, 9 * minute])) is None  # corrections only
    assert handover.hole(np.array([11 * minute, 9 * minute])) == Gap(
        10 * minute, 11 * minute, "start"
    )
    assert handover.hole(np.array([13 * minute])) is None  # once: the handover is over
    handover.expect(20 * minute, "reconnect", 100 * minute)
    assert handover.hole(np.array([20 * minute, 21 * minute])) is None  # in step: no hole
    # live in the session's last minute, its bars sent before: the next bars are the next
    # day's, and the hole ends with the session
    handover.expect(99 * minute, "start", 100 * minute)
    assert handover.overdue(100 * minute) is None  # its last bars may still come
    assert handover.hole(np.array([2_000 * minute])) == Gap(99 * minute, 100 * minute, "start")
    handover.expect(99 * minute, "start", 100 * minute)
    assert handover.overdue(102 * minute) == Gap(99 * minute, 100 * minute, "start")
    assert handover.overdue(103 * minute) is None
