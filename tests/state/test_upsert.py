"""Ingest is an upsert by (symbol, bar length, bar start): re-sent and corrected bars replace the
ones they correct, duplicates change nothing, a minute bar supersedes its minute's seconds."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.model import NS_PER_MINUTE, NS_PER_SECOND, AggregateBatch, AggregateKind, Universe
from tapescan.state.market_state import MarketState

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)
UNIVERSE = Universe(["AAA", "BBB", "CCC"])
FIRST_MINUTE = et_to_ns(DAY, dt.time(9, 24))  # the window spans the regular open (09:30)
MINUTES = 12

EXACT = (
    "price",
    "last_event_ns",
    "volume",
    "open",
    "hod",
    "lod",
    "pm_high",
    "pm_low",
    "regular_high",
    "regular_low",
    "regular_last",
    "slot_volume",
    "volume_1m",
    "second_volume",
    "minute_price",
)


@dataclass(frozen=True)
class Bar:
    row: int
    start_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float


def to_batch(bars: list[Bar], kind: AggregateKind = AggregateKind.MINUTE) -> AggregateBatch:
    return AggregateBatch(
        kind=kind,
        symbol_index=np.array([b.row for b in bars], dtype=np.int32),
        start_ns=np.array([b.start_ns for b in bars], dtype=np.int64),
        open=np.array([b.open for b in bars]),
        high=np.array([b.high for b in bars]),
        low=np.array([b.low for b in bars]),
        close=np.array([b.close for b in bars]),
        volume=np.array([b.volume for b in bars], dtype=np.int64),
        vwap=np.array([b.vwap for b in bars]),
        trades=np.ones(len(bars), dtype=np.int32),
    )


def bar_at(row: int, start_ns: int, draw: st.DrawFn) -> Bar:
    cents = st.integers(500, 2_000)
    low, span = draw(cents), draw(st.integers(0, 300))
    high = low + span
    o, c, v = (draw(st.integers(low, high)) for _ in range(3))
    return Bar(
        row, start_ns, o / 100, high / 100, low / 100, c / 100, draw(st.integers(1, 10**6)), v / 100
    )


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Bar], list[list[Bar]], list[int]]:
    """The final bars; the batches that deliver them with earlier versions and duplicates (each
    key's last delivery its final version); a clock reading after each batch."""
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, MINUTES - 1)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    finals: list[Bar] = []
    per_key: list[list[Bar]] = []
    for row, minute in keys:
        start = FIRST_MINUTE + minute * NS_PER_MINUTE
        versions = [bar_at(row, start, draw) for _ in range(draw(st.integers(1, 3)))]
        finals.append(versions[-1])
        sent: list[Bar] = []
        for version in versions:
            sent.extend([version] * draw(st.integers(1, 2)))  # duplicates of each version
        per_key.append(sent)
    shuffle = draw(st.randoms(use_true_random=False))
    order = [k for k, sent in enumerate(per_key) for _ in sent]
    shuffle.shuffle(order)
    taken = [0] * len(per_key)
    stream = []
    for k in order:
        stream.append(per_key[k][taken[k]])
        taken[k] += 1
    batches: list[list[Bar]] = []
    while stream:
        size = draw(st.integers(1, 4))
        batches.append(stream[:size])
        stream = stream[size:]
    clock = [
        FIRST_MINUTE + draw(st.integers(0, (MINUTES + 2) * 60)) * NS_PER_SECOND for _ in batches
    ]
    return finals, batches, clock


def reference(finals: list[Bar], until_ns: int) -> MarketState:
    """The state from the final bars only, each minute's bars in one batch, in time order."""
    state = MarketState(UNIVERSE, CAL, DAY)
    for start in sorted({b.start_ns for b in finals}):
        state.apply(to_batch([b for b in finals if b.start_ns == start]))
    state.advance_to(until_ns)
    return state


def assert_same(state: MarketState, expected: MarketState) -> None:
    for name in EXACT:
        np.testing.assert_array_equal(getattr(state, name), getattr(expected, name), name)
    np.testing.assert_allclose(state.dollar_volume, expected.dollar_volume, rtol=1e-12)
    np.testing.assert_array_equal(state.close, expected.close, "close")


UNTIL = FIRST_MINUTE + (MINUTES + 5) * NS_PER_MINUTE


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_duplicates_and_corrections_end_as_the_corrected_bars_alone(
    case: tuple[list[Bar], list[list[Bar]], list[int]],
) -> None:
    finals, batches, clock = case
    state = MarketState(UNIVERSE, CAL, DAY)
    for bars, now in zip(batches, clock, strict=True):
        state.apply(to_batch(bars))
        state.advance_to(now)  # scan cycles move the clock between batches
    state.advance_to(UNTIL)
    assert_same(state, reference(finals, UNTIL))


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_what_upsert_says_it_applied_records_each_final_bar_once(
    case: tuple[list[Bar], list[list[Bar]], list[int]],
) -> None:
    """As the node records minute bars: the applied rows, a correction replacing its bar."""
    finals, batches, clock = case
    state = MarketState(UNIVERSE, CAL, DAY)
    stored: dict[tuple[int, int], Bar] = {}
    for bars, now in zip(batches, clock, strict=True):
        applied = state.upsert(to_batch(bars))
        for k, bar in enumerate(bars):
            key = (bar.row, bar.start_ns)
            if applied.corrected[k]:
                assert key in stored, "a correction of a bar never recorded"
            elif applied.new[k] or applied.replaced[k]:
                assert key not in stored, "a second row for one bar"
            else:
                continue  # a duplicate: nothing to record
            stored[key] = bar
        state.advance_to(now)
    assert stored == {(b.row, b.start_ns): b for b in finals}


@st.composite
def batch_streams(draw: st.DrawFn) -> list[tuple[AggregateKind, list[Bar]]]:
    stream = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from([AggregateKind.SECOND, AggregateKind.MINUTE]))
        step = NS_PER_SECOND if kind is AggregateKind.SECOND else NS_PER_MINUTE
        span = MINUTES * NS_PER_MINUTE // step
        bars = [
            bar_at(
                draw(st.integers(0, 2)), FIRST_MINUTE + draw(st.integers(0, span - 1)) * step, draw
            )
            for _ in range(draw(st.integers(1, 5)))
        ]
        stream.append((kind, bars))
    return stream


@settings(max_examples=300, deadline=None)
@given(batch_streams())
def test_applying_each_batch_twice_equals_applying_it_once(
    stream: list[tuple[AggregateKind, list[Bar]]],
) -> None:
    once, twice = MarketState(UNIVERSE, CAL, DAY), MarketState(UNIVERSE, CAL, DAY)
    for kind, bars in stream:
        once.apply(to_batch(bars, kind))
        twice.apply(to_batch(bars, kind))
        twice.apply(to_batch(bars, kind))
    for state in (once, twice):
        state.advance_to(UNTIL)
    assert_same(twice, once)
    np.testing.assert_array_equal(twice.dollar_volume, once.dollar_volume)


def seconds_of(minute_bar: Bar, seed: int) -> list[Bar]:
    """Per-second bars that add up to ``minute_bar`` (its open first, its close last)."""
    rng = random.Random(seed)
    seconds = sorted(rng.sample(range(60), 4))
    volumes = [minute_bar.volume // 4] * 3 + [minute_bar.volume - 3 * (minute_bar.volume // 4)]
    prices = [minute_bar.open, minute_bar.high, minute_bar.low, minute_bar.close]
    return [
        Bar(minute_bar.row, minute_bar.start_ns + s * NS_PER_SECOND, p, p, p, p, v, p)
        for s, p, v in zip(seconds, prices, volumes, strict=True)
    ]


def test_a_minute_bar_supersedes_its_seconds_and_later_seconds_of_that_minute() -> None:
    minute = Bar(0, FIRST_MINUTE + 7 * NS_PER_MINUTE, 10.0, 10.5, 9.8, 10.2, 4_000, 10.13)
    live = MarketState(UNIVERSE, CAL, DAY)
    parts = seconds_of(minute, 1)
    live.apply(to_batch(parts, AggregateKind.SECOND))
    live.apply(to_batch(parts[1:], AggregateKind.SECOND))  # re-sent seconds: nothing changes
    assert live.volume[0] == minute.volume
    rolling = live.volume_1m.copy()
    # Late trades: the minute bar has more volume and a higher high than its seconds showed.
    corrected = Bar(0, minute.start_ns, 10.0, 10.7, 9.8, 10.25, 4_600, 10.2)
    live.apply(to_batch([corrected]))
    live.apply(to_batch(parts, AggregateKind.SECOND))  # seconds of a closed minute: superseded
    alone = MarketState(UNIVERSE, CAL, DAY)
    alone.apply(to_batch([corrected]))
    for name in ("price", "volume", "dollar_volume", "hod", "lod", "open", "regular_last"):
        np.testing.assert_array_equal(getattr(live, name), getattr(alone, name), name)
    np.testing.assert_array_equal(live.volume_1m, rolling)  # the rolling minute is per second
    assert live.recent.superseded_seconds == len(parts)
    assert live.recent.duplicates == len(parts) - 1


def test_a_lower_correction_lowers_the_high_of_day_and_a_late_resend_is_counted() -> None:
    state = MarketState(UNIVERSE, CAL, DAY)
    first = Bar(1, FIRST_MINUTE + 8 * NS_PER_MINUTE, 11.0, 14.0, 10.9, 11.2, 900, 11.5)
    state.apply(to_batch([first]))
    assert state.hod[1] == 14.0
    busted = Bar(1, first.start_ns, 11.0, 11.3, 10.9, 11.2, 700, 11.1)  # a bad print removed
    state.apply(to_batch([busted]))
    assert state.hod[1] == 11.3
    assert state.volume[1] == 700
    # A bar 16 minutes later takes that minute's place in the window: a re-send is skipped.
    later = Bar(1, first.start_ns + 16 * NS_PER_MINUTE, 11.2, 11.4, 11.1, 11.3, 100, 11.3)
    state.apply(to_batch([later]))
    state.apply(to_batch([first]))
    assert state.volume[1] == 800
    assert state.hod[1] == 11.4
    assert state.recent.late == 1


def test_old_minute_bars_never_seen_are_added_however_late_they_come() -> None:
    """Catch-up and backfill send minutes far behind the newest one: added once, then skipped."""
    state = MarketState(UNIVERSE, CAL, DAY)
    newest = Bar(2, FIRST_MINUTE + 40 * NS_PER_MINUTE, 5.0, 5.1, 4.9, 5.0, 300, 5.0)
    old = Bar(2, FIRST_MINUTE + 2 * NS_PER_MINUTE, 5.5, 6.0, 5.4, 5.6, 200, 5.7)
    state.apply(to_batch([newest]))
    state.apply(to_batch([old]))
    state.apply(to_batch([old]))
    assert state.volume[2] == 500
    assert state.hod[2] == 6.0
    assert state.price[2] == 5.0
    assert state.pm_high[2] == 6.0  # 09:26 is pre-market


def test_a_batch_of_many_minutes_ends_as_its_minutes_one_batch_each() -> None:
    """Today's bars read back from the store come ten minutes to a batch, in any order: above
    256 rows a start they are applied a start at a time, below as one batch; both end as the
    minutes applied one after the other."""
    rng = np.random.default_rng(5)
    for symbols in (600, 100):
        universe = Universe([f"S{i}" for i in range(symbols)])
        bars = []
        for minute in range(10):
            for row in range(symbols):
                low = int(rng.integers(500, 2_000))
                high = low + int(rng.integers(0, 50))
                o, c = (int(rng.integers(low, high + 1)) for _ in range(2))
                start = FIRST_MINUTE + minute * NS_PER_MINUTE
                bars.append(
                    Bar(row, start, o / 100, high / 100, low / 100, c / 100, 10 + row, c / 100)
                )
        shuffled = [bars[i] for i in rng.permutation(len(bars))]
        whole = MarketState(universe, CAL, DAY)
        whole.apply(to_batch(shuffled))
        whole.advance_to(UNTIL)
        expected = MarketState(universe, CAL, DAY)
        for minute in range(10):
            expected.apply(to_batch(bars[minute * symbols : (minute + 1) * symbols]))
        expected.advance_to(UNTIL)
        assert_same(whole, expected)


def test_a_backfilled_bar_older_than_the_window_fills_the_snapshots_up_to_the_next_bar() -> None:
    """A reconnect's backfill brings a minute from before the correction window after the
    socket's newer bars: the 1/5/15-minute snapshots end as a replay in time order takes them."""
    old = Bar(1, FIRST_MINUTE, 5.5, 6.0, 5.4, 5.6, 200, 5.7)
    newer = Bar(1, FIRST_MINUTE + 25 * NS_PER_MINUTE, 5.0, 5.1, 4.9, 5.0, 300, 5.0)
    # another symbol trades every minute since: the window holds none of the old minute's
    others = [
        Bar(0, FIRST_MINUTE + m * NS_PER_MINUTE, 9.0, 9.0, 9.0, 9.0, 10, 9.0) for m in range(10, 26)
    ]
    until = FIRST_MINUTE + 30 * NS_PER_MINUTE
    state = MarketState(UNIVERSE, CAL, DAY)
    for bar in others:
        state.apply(to_batch([bar] if bar.start_ns != newer.start_ns else [bar, newer]))
    state.advance_to(until)
    state.apply(to_batch([old]))
    expected = MarketState(UNIVERSE, CAL, DAY)
    expected.apply(to_batch([old]))
    for bar in others:
        expected.apply(to_batch([bar] if bar.start_ns != newer.start_ns else [bar, newer]))
    expected.advance_to(until)
    np.testing.assert_array_equal(state.minute_price, expected.minute_price)
    assert state.price_minutes_ago(4)[1] == 5.0  # 26 minutes in: the newer bar
    assert state.price_minutes_ago(8)[1] == 5.6  # 22 minutes in: the old bar, not unknown
