import datetime as dt
import json
from pathlib import Path

import numpy as np

from tapescan.feeds.massive.parse import FrameParser
from tapescan.market.calendar import market_calendar
from tapescan.model import AggregateKind, Universe
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
