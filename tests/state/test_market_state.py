import asyncio
import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.market.clock import FastClock
from tapescan.model import AggregateBatch, AggregateKind, HaltEvent, Universe
from tapescan.state.market_state import MarketState

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)
UNIVERSE = Universe(["AAA", "BBB", "CCC"])


def batch(rows: list[tuple[int, float, float, float, float, int]], start_ns: int) -> AggregateBatch:
    """Minute bars (symbol row, open, high, low, close, volume) all starting at ``start_ns``."""
    n = len(rows)
    array = np.array(rows, dtype=np.float64).reshape(n, 6)
    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=array[:, 0].astype(np.int32),
        start_ns=np.full(n, start_ns, dtype=np.int64),
        open=array[:, 1],
        high=array[:, 2],
        low=array[:, 3],
        close=array[:, 4],
        volume=array[:, 5].astype(np.int64),
        vwap=(array[:, 2] + array[:, 3]) / 2,
        trades=np.ones(n, dtype=np.int32),
    )


def fresh_state() -> MarketState:
    return MarketState(UNIVERSE, CAL, DAY)


def at(time: dt.time) -> int:
    return et_to_ns(DAY, time)


def test_malformed_rows_are_counted_and_skipped_and_never_reach_the_columns() -> None:
    state = fresh_state()
    good = (0, 10.0, 10.5, 9.9, 10.2, 500)
    bad_rows = [
        (-1, 10.0, 10.5, 9.9, 10.2, 500),  # unknown symbol
        (1, float("nan"), 10.5, 9.9, 10.2, 500),  # NaN price
        (1, 10.0, 10.5, 9.9, -3.0, 500),  # negative price
        (1, 10.0, float("inf"), 9.9, 10.2, 500),  # infinite price
        (2, 10.0, 10.5, 9.9, 10.2, -7),  # negative volume
        (2, 10.0, 9.0, 9.9, 10.2, 100),  # high below low
    ]
    accepted = state.apply(batch([good, *bad_rows], at(dt.time(9, 0))))
    assert accepted == 1
    counters = state.counters
    assert (
        counters.unknown_symbol,
        counters.bad_price,
        counters.bad_volume,
        counters.inconsistent_bar,
    ) == (1, 3, 1, 1)
    assert counters.rejected == 6
    assert state.volume.tolist() == [500, 0, 0]
    assert np.isnan(state.price[1:]).all()
    assert np.isnan(state.hod[1:]).all()
    assert state.price[0] == 10.2


def test_a_batch_of_only_bad_rows_changes_nothing_and_the_next_good_one_applies() -> None:
    state = fresh_state()
    assert state.apply(batch([(1, float("nan"), 1, 1, 1, 1)], at(dt.time(9, 0)))) == 0
    assert state.apply(batch([(1, 5.0, 5.5, 4.9, 5.1, 10)], at(dt.time(9, 1)))) == 1
    assert state.volume[1] == 10


def test_rows_from_before_todays_0400_are_stale_and_skipped() -> None:
    state = fresh_state()
    state.apply(batch([(0, 10.0, 10.0, 10.0, 10.0, 5)], at(dt.time(9, 0))))
    yesterday = et_to_ns(CAL.previous_sessions(DAY, 1)[0], dt.time(19, 0))
    assert state.apply(batch([(0, 10.0, 10.0, 10.0, 10.0, 5)], yesterday)) == 0
    assert state.counters.stale == 1


def test_open_is_the_first_regular_aggregate_and_close_is_fixed_at_the_regular_close() -> None:
    state = fresh_state()
    state.apply(batch([(0, 9.0, 9.2, 8.9, 9.1, 100)], at(dt.time(9, 29))))
    assert np.isnan(state.open[0])
    state.apply(batch([(0, 9.3, 9.4, 9.2, 9.35, 100)], at(dt.time(9, 30))))
    state.apply(batch([(0, 9.4, 9.6, 9.3, 9.5, 100)], at(dt.time(9, 31))))
    assert state.open[0] == 9.3
    state.apply(batch([(0, 9.7, 9.8, 9.6, 9.75, 100)], at(dt.time(15, 58))))
    assert np.isnan(state.close[0])
    state.apply(batch([(0, 9.7, 9.8, 9.6, 9.75, 100)], at(dt.time(15, 59))))  # known at 16:00
    assert state.close[0] == 9.75
    state.apply(batch([(0, 9.9, 9.9, 9.8, 9.85, 100)], at(dt.time(16, 5))))
    assert state.close[0] == 9.75
    assert state.regular_high[0] == 9.8
    assert state.hod[0] == 9.9
    assert state.volume[0] == 600
    assert state.pm_high[0] == 9.2


def test_rollover_at_0400_of_the_next_session_moves_close_to_prev_close_and_resets_today() -> None:
    state = fresh_state()
    state.apply(batch([(0, 9.3, 9.4, 9.2, 9.35, 100)], at(dt.time(9, 30))))
    state.apply(batch([(0, 9.7, 9.8, 9.6, 9.75, 100)], at(dt.time(15, 59))))
    next_day = CAL.next_session(DAY)
    state.advance_to(et_to_ns(next_day, dt.time(3, 59)))
    assert state.volume[0] == 200  # still yesterday's trading day
    state.advance_to(et_to_ns(next_day, dt.time(4, 0)))
    assert state.times.date == next_day
    assert state.prev_close[0] == 9.75
    assert state.volume[0] == 0
    assert np.isnan(state.hod[0])
    assert np.isnan(state.close[0])
    assert state.price[0] == 9.75  # the last trade survives the night
    assert state.avg_volume_20d[0] == 200


def test_halts_set_and_clear_the_flag() -> None:
    state = fresh_state()
    state.apply_halt(HaltEvent(2, True, "LULD pause", at(dt.time(10, 0))))
    assert state.halted.tolist() == [False, False, True]
    state.apply_halt(HaltEvent(2, False, "LULD pause", at(dt.time(10, 5))))
    assert not state.halted.any()
    state.apply_halt(HaltEvent(99, True, "LULD pause", at(dt.time(10, 6))))  # unknown: ignored
    assert not state.halted.any()


def test_memory_does_not_grow_with_events() -> None:
    state = fresh_state()
    sizes_before = sum(v.nbytes for v in vars(state).values() if isinstance(v, np.ndarray))
    for minute in range(600):
        start = at(dt.time(4, 0)) + minute * 60_000_000_000
        state.apply(batch([(minute % 3, 10.0, 10.1, 9.9, 10.0, 100)], start))
    sizes_after = sum(v.nbytes for v in vars(state).values() if isinstance(v, np.ndarray))
    assert sizes_after == sizes_before


@settings(max_examples=5, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from([dt.time(9, 45), dt.time(12, 3), dt.time(16, 30)]),
)
def test_per_second_updates_end_each_minute_equal_to_per_minute_updates(
    seed: int, until: dt.time
) -> None:
    """Incremental (per-second) and batch (per-minute) ingestion agree at every minute's end."""
    market = SimMarket(seed, 60, CAL)
    start = et_to_ns(DAY, dt.time(9, 25))
    end = et_to_ns(DAY, until)
    by_second = MarketState(market.universe, CAL, DAY)
    by_minute = MarketState(market.universe, CAL, DAY)

    async def run() -> None:
        async for event in SimFeed(market).events(FastClock(start), start, end):
            if isinstance(event, AggregateBatch):
                by_second.apply(event)
                if event.kind is AggregateKind.MINUTE:
                    by_minute.apply(event)

    asyncio.run(run())
    by_second.advance_to(end)
    by_minute.advance_to(end)
    assert by_second.volume.sum() > 0
    np.testing.assert_array_equal(by_second.volume, by_minute.volume)
    np.testing.assert_array_equal(by_second.slot_volume, by_minute.slot_volume)
    for name in ("price", "hod", "lod", "pm_high", "pm_low", "open", "regular_last", "close"):
        np.testing.assert_array_equal(
            getattr(by_second, name), getattr(by_minute, name), err_msg=name
        )
    np.testing.assert_allclose(by_second.dollar_volume, by_minute.dollar_volume, rtol=1e-12)
    np.testing.assert_array_equal(by_second.volume_1m, by_minute.volume_1m)
    np.testing.assert_array_equal(by_second.minute_price, by_minute.minute_price)


@pytest.mark.parametrize("minutes", [1, 5, 15])
def test_price_minutes_ago_is_the_price_at_that_minute_boundary(minutes: int) -> None:
    state = fresh_state()
    for minute in range(30):
        state.apply(
            batch(
                [(0, 10.0 + minute, 10.0 + minute, 10.0 + minute, 10.0 + minute, 1)],
                at(dt.time(9, 30)) + minute * 60_000_000_000,
            )
        )
    # Now 10:00:00: the last bar (09:59) closed at 39; N minutes ago the last close was 39 - N.
    assert state.price_minutes_ago(minutes)[0] == 39.0 - minutes


def concat(batches: list[AggregateBatch]) -> AggregateBatch:
    """Several minutes in one batch, as a catch-up or a read back from the store delivers them."""

    def join(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])

    return AggregateBatch(
        kind=batches[0].kind,
        symbol_index=join("symbol_index"),
        start_ns=join("start_ns"),
        open=join("open"),
        high=join("high"),
        low=join("low"),
        close=join("close"),
        volume=join("volume"),
        vwap=join("vwap"),
        trades=join("trades"),
    )


def minute_batches(market: SimMarket, start: int, end: int) -> list[AggregateBatch]:
    async def collect() -> list[AggregateBatch]:
        return [
            e
            async for e in SimFeed(market, second_aggregates=False).events(
                FastClock(start), start, end
            )
            if isinstance(e, AggregateBatch)
        ]

    return asyncio.run(collect())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    group=st.integers(min_value=1, max_value=40),
    clock_ahead_s=st.integers(min_value=0, max_value=3_600),
    probe_s=st.sampled_from([0, 1, 30, 59]),
)
def test_minute_changes_do_not_depend_on_how_bars_arrive(
    seed: int, group: int, clock_ahead_s: int, probe_s: int
) -> None:
    """1/5/15-minute changes equal a replay in time order, however the same bars arrive.

    The live way: the scan loop has moved the clock (to "now") before a catch-up delivers the
    morning's bars, several minutes to a batch, as a restart reading today's bars from the store
    does. Before the fix the snapshots taken by the clock kept the price from before the batch.
    """
    market = SimMarket(seed, 40, CAL)
    start = at(dt.time(9, 25))
    now = at(dt.time(10, 20))
    batches = minute_batches(market, start, now)
    replayed = MarketState(market.universe, CAL, DAY)
    for b in batches:
        replayed.apply(b)
    live = MarketState(market.universe, CAL, DAY)
    live.advance_to(start + min(clock_ahead_s * 1_000_000_000, now - start))
    for i in range(0, len(batches), group):
        live.apply(concat(batches[i : i + group]))
    probe = now + probe_s * 1_000_000_000
    replayed.advance_to(probe)
    live.advance_to(probe)
    for minutes in (1, 5, 15):
        expected = replayed.price_minutes_ago(minutes)
        assert np.isfinite(expected).sum() > 10
        np.testing.assert_array_equal(live.price_minutes_ago(minutes), expected, err_msg=minutes)
    np.testing.assert_array_equal(live.price, replayed.price)
    np.testing.assert_array_equal(live.volume, replayed.volume)


def test_a_bar_ending_on_a_boundary_that_arrives_after_the_clock_passed_it_counts() -> None:
    """The cycle at hh:mm:00.3 moved the clock before the bar ending at hh:mm:00 was applied."""
    state = fresh_state()
    state.apply(batch([(0, 10.0, 10.0, 10.0, 10.0, 1)], at(dt.time(9, 58))))
    state.advance_to(at(dt.time(10, 0)) + 300_000_000)
    state.apply(batch([(0, 11.0, 11.0, 11.0, 11.0, 1)], at(dt.time(9, 59))))
    state.advance_to(at(dt.time(10, 1)))
    assert state.price_minutes_ago(1)[0] == 11.0  # the price at 10:00:00, as a replay has it
