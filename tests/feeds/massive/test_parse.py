import datetime as dt
import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.feeds.massive.parse import AHEAD_NS, FrameParser, lulds_of, not_ahead
from tapescan.market.calendar import market_calendar
from tapescan.model import AggregateKind, BandBatch, HaltEvent, Universe
from tapescan.state.market_state import MarketState

RESOURCES = Path(__file__).parent / "resources"
UNIVERSE = Universe(["GTE", "MSFT", "SPCE"])


def frames() -> list[bytes]:
    recorded = json.loads((RESOURCES / "frames.json").read_text())
    return [json.dumps(item["frame"]).encode() for item in recorded]


def test_per_second_aggregates_become_columns_in_universe_rows() -> None:
    parser = FrameParser(UNIVERSE)
    parsed = parser.parse(frames()[0])
    (batch,) = parsed.batches
    assert batch.kind is AggregateKind.SECOND
    assert batch.symbol_index.tolist() == [2, 0]
    assert batch.start_ns.tolist() == [1610144868000 * 10**6] * 2
    assert batch.close.tolist() == [25.39, 0.4486]
    assert batch.volume.tolist() == [200, 4110]
    assert batch.vwap.tolist() == [25.3981, 0.4488]
    assert batch.trades.tolist() == [4, 6]  # volume / average trade size z


def test_minute_aggregates_and_status_are_kept_other_events_skipped() -> None:
    parser = FrameParser(UNIVERSE)
    parsed = parser.parse(frames()[1])
    (batch,) = parsed.batches
    assert batch.kind is AggregateKind.MINUTE
    assert parsed.statuses == [("auth_success", "authenticated")]
    assert parser.counters.skipped_events == 2


def test_malformed_messages_are_counted_and_dropped_without_losing_the_good_ones() -> None:
    parser = FrameParser(UNIVERSE)
    parsed = parser.parse(frames()[2])
    (batch,) = parsed.batches
    assert batch.symbol_index.tolist() == [0]
    assert batch.close.tolist() == [0.45]
    assert parser.counters.malformed_messages == 3  # no close, text volume, no symbol
    assert parser.counters.unknown_symbols == 1


def test_a_frame_that_is_not_json_is_counted_not_raised() -> None:
    parser = FrameParser(UNIVERSE)
    assert parser.parse(b"[{not json").batches == []
    assert parser.parse(b'{"ev": "A"}').batches == []
    assert parser.counters.malformed_frames == 2
    assert parser.parse(frames()[0]).batches  # and the next frame parses


def test_bad_values_that_parse_never_poison_state() -> None:
    parser = FrameParser(UNIVERSE)
    day = dt.date(2021, 1, 8)
    state = MarketState(UNIVERSE, market_calendar(), day)
    bad = (
        b'[{"ev":"A","sym":"SPCE","v":10,"o":-1,"h":1,"l":-1,"c":1,"s":1610144868000},'
        b'{"ev":"A","sym":"SPCE","v":-10,"o":1,"h":1,"l":1,"c":1,"s":1610144868000},'
        b'{"ev":"A","sym":"SPCE","v":10,"o":1,"h":0.5,"l":1,"c":1,"s":1610144868000},'
        b'{"ev":"A","sym":"SPCE","v":10,"o":1e400,"h":1,"l":1,"c":1,"s":1610144868000}]'
    )
    for batch in parser.parse_many([bad, frames()[0]]).batches:
        state.apply(batch)
    assert parser.counters.malformed_messages == 1  # 1e400 is out of range: dropped at parse
    assert state.counters.rejected == 3  # negative price, negative volume, high below low
    assert state.volume.tolist() == [4110, 0, 200]
    assert np.isfinite(state.price[[0, 2]]).all()


# ---------------------------------------------------------------------------- fuzzed frames

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
NUMBER = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -1, 1e-300, 1e300, 2**63, 1610144868, 1610144868000000, 2**31])
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
NOW_NS = 1610144870 * 10**9  # the recorded frames' time
RECORDED_MESSAGES = [
    message
    for item in json.loads((RESOURCES / "frames.json").read_text())
    for message in item["frame"]
    if isinstance(message, dict)
]
# LULD messages as the live feed sends them (t in ns; the doc's example in µs)
LULD_MESSAGES = [
    {"ev": "LULD", "T": "MSFT", "h": 218.96, "l": 198.11, "i": [21], "z": 3, "t": NOW_NS, "q": 1},
    {"ev": "LULD", "T": "SPCE", "h": 27.5, "l": 22.5, "i": [17], "z": 3, "t": NOW_NS // 1000},
    {"ev": "LULD", "T": "SPCE", "h": 0, "l": 0, "i": [18], "z": 3, "t": NOW_NS, "q": 3},
]
RECORDED_MESSAGES += LULD_MESSAGES
FIELDS = (
    *("ev", "sym", "v", "av", "vw", "o", "c", "h", "l", "a", "z", "s", "e", "status", "message"),
    *("T", "i", "t"),
)


@st.composite
def mutated_message(draw: st.DrawFn) -> object:
    """A recorded message with fields dropped, replaced by any JSON value, or added."""
    base = dict(draw(st.sampled_from(RECORDED_MESSAGES)))
    base["ev"] = draw(st.sampled_from(["A", "AM", "A", "AM", "status", "T", "LULD", "XQ"]))
    base["sym" if "sym" in base else "T"] = draw(st.sampled_from([*UNIVERSE.symbols, "ZZZZ", ""]))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        how = draw(st.integers(0, 3))
        if how == 0:
            base.pop(name, None)
        elif how == 1:
            base[name] = draw(JSON_VALUE)
        else:
            base[name] = draw(NUMBER)  # the right type, any value
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUE)  # not an object at all
    return base


@st.composite
def fuzzed_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=300))  # arbitrary bytes
    frame = json.dumps(draw(st.lists(mutated_message(), max_size=8))).encode()
    if kind < 4:
        return frame
    cut = draw(st.integers(0, len(frame)))  # a frame broken off or spliced with garbage
    return frame[:cut] + draw(st.binary(max_size=20)) + frame[cut + draw(st.integers(0, 20)) :]


def test_bars_dated_after_the_clock_are_dropped_and_counted() -> None:
    parser = FrameParser(UNIVERSE)
    bar = '{"ev":"A","sym":"SPCE","v":10,"o":1,"h":1,"l":1,"c":1,"s":%d}'
    now_ms = NOW_NS // 10**6
    frame = ("[" + ",".join(bar % s for s in (now_ms, now_ms + 60_000, 2147483648)) + "]").encode()
    (batch,) = parser.parse(frame).batches
    kept = not_ahead(batch, NOW_NS, parser.counters)
    assert kept is not None
    assert (kept.start_ns // 10**6).tolist() == [now_ms, now_ms + 60_000]  # skew allowed
    assert parser.counters.ahead_of_clock == 1  # 2038 (s read as seconds) is not
    assert not_ahead(kept, NOW_NS - 3_600 * 10**9, parser.counters) is None


def test_window_starts_in_any_unit_are_read_as_ms_and_absurd_values_are_malformed() -> None:
    parser = FrameParser(UNIVERSE)
    bar = '{"ev":"A","sym":"SPCE","v":%s,"o":1,"h":%s,"l":1,"c":1,"z":%s,"s":%s}'
    seconds = 1610144868
    units = [seconds, seconds * 1000, seconds * 10**6, seconds * 10**9]
    good = [bar % (10, 1, 1, s) for s in units]
    bad = [bar % (10, 1, 1, 10**10), bar % (1e13, 1, 1, seconds), bar % (10, 1e8, 1, seconds)]
    tiny_trades = bar % (10**9, 1, 1e-300, seconds)  # z near 0: trades capped, not overflowed
    frame = ("[" + ",".join([*good, *bad, tiny_trades]) + "]").encode()
    (batch,) = parser.parse(frame).batches
    assert batch.start_ns.tolist() == [seconds * 10**9] * 5
    assert batch.trades.tolist() == [10, 10, 10, 10, 2**31 - 1]
    assert parser.counters.malformed_messages == 3  # no unit fits, 1e13 shares, a $1e8 high


@settings(max_examples=400, deadline=None)
@given(st.lists(fuzzed_frame(), min_size=1, max_size=6))
def test_fuzzed_frames_never_raise_and_never_corrupt_state(fuzzed: list[bytes]) -> None:
    parser = FrameParser(UNIVERSE)
    state = MarketState(UNIVERSE, market_calendar(), dt.date(2021, 1, 8))
    for batch in parser.parse_many(frames()).batches:
        state.apply(batch)
    before = parser.counters.frames
    parsed = parser.parse_many(fuzzed)
    assert parser.counters.frames == before + len(fuzzed)
    for batch in parsed.batches:
        for column in (batch.open, batch.high, batch.low, batch.close, batch.vwap):
            assert np.isfinite(column).all()
        assert (batch.symbol_index >= 0).all()
        assert (batch.symbol_index < len(UNIVERSE)).all()
        kept = not_ahead(batch, NOW_NS, parser.counters)  # as the feed does, on its clock
        if kept is not None:
            state.apply(kept)
    for event in lulds_of(parsed, NOW_NS, parser.counters):
        if isinstance(event, HaltEvent):
            assert 0 <= event.symbol_index < len(UNIVERSE)
            assert event.ts_event_ns <= NOW_NS + AHEAD_NS
        state.apply_event(event)
    banded = ~np.isnan(state.luld_upper)
    assert (np.isnan(state.luld_lower) == ~banded).all()
    assert (state.luld_lower[banded] > 0).all()
    assert (state.luld_upper[banded] >= state.luld_lower[banded]).all()
    assert np.isfinite(state.luld_upper[banded]).all()
    # whatever came, the state holds only bars it could accept: finite, positive, consistent
    assert (state.volume >= 0).all()
    assert np.isfinite(state.dollar_volume).all()
    assert (state.dollar_volume >= 0).all()
    traded = state.volume > 0
    for name in ("price", "hod", "lod"):
        values = getattr(state, name)[traded]
        assert (np.isfinite(values) & (values > 0)).all(), name
    assert (state.hod[traded] >= state.lod[traded]).all()
    for batch in parser.parse_many(frames()).batches:  # and good frames still apply
        state.apply(batch)


def test_luld_messages_become_bands_and_halts() -> None:
    parser = FrameParser(UNIVERSE)
    frame = json.dumps(
        [
            *LULD_MESSAGES,
            {"ev": "LULD", "T": "ZZZZ", "h": 2.0, "l": 1.0, "i": [21], "t": NOW_NS},  # unknown
            {"ev": "LULD", "T": "GTE", "h": 1.0, "l": 2.0, "i": [21], "t": NOW_NS},  # inverted
            {"ev": "LULD", "T": "GTE", "h": 2.0, "l": 1.0, "i": [21]},  # no instant
            {"ev": "LULD", "sym": "GTE", "h": 0.5, "l": 0.4, "i": [16], "t": NOW_NS // 10**6},
        ]
    ).encode()
    again = json.dumps([{**LULD_MESSAGES[0], "h": 219.5}]).encode()  # MSFT once more
    parsed = parser.parse_many([frame, again])
    assert parsed.batches == []
    assert isinstance(parsed.bands, BandBatch)
    assert parsed.bands.symbol_index.tolist() == [2, 0, 1]  # SPCE (and its halt), GTE, MSFT
    assert parsed.bands.upper.tolist() == [27.5, 0.5, 219.5]  # MSFT's last
    assert parsed.bands.lower.tolist() == [22.5, 0.4, 198.11]
    assert [(h.symbol_index, h.halted, h.ts_event_ns) for h in parsed.halts] == [
        (2, True, NOW_NS),  # the µs instant read as one, to the ms
        (2, False, NOW_NS),  # a reopening: bands of 0 are not bands
    ]
    assert parser.counters.lulds == 5
    assert parser.counters.unknown_symbols == 1
    assert parser.counters.malformed_messages == 2
    state = MarketState(UNIVERSE, market_calendar(), dt.date(2021, 1, 8))
    for event in lulds_of(parsed, NOW_NS, parser.counters):
        state.apply_event(event)
    assert state.luld_upper.tolist() == [0.5, 219.5, 27.5]
    assert not state.halted.any()  # halted, then reopened
    late = parser.parse(json.dumps([{**LULD_MESSAGES[1], "t": NOW_NS + AHEAD_NS + 10**9}]).encode())
    events = lulds_of(late, NOW_NS, parser.counters)
    assert [type(event) for event in events] == [BandBatch]  # the halt: too far ahead
    assert parser.counters.ahead_of_clock == 1
