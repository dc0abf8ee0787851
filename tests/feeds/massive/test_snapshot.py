"""The full-market snapshot decides which tickers a gap asks: quiet ones are left out, and
anything uncertain is asked (a ticker not shown, or shown without an instant). A snapshot of
the wrong shape (every ticker asked) is tests/feeds/massive/test_backfill.py's, through the
fake."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import numpy as np
import pytest

from tapescan.feeds.massive.backfill import Backfiller, Gap
from tapescan.feeds.massive.client import MassiveFatalError
from tapescan.feeds.massive.parse import to_ms
from tapescan.feeds.massive.rest import MassiveRest
from tapescan.feeds.massive.snapshot import active_rows
from tapescan.model import Universe

GAP_NS = 1_764_000_000 * 10**9  # the gap's start (2025-11-24 16:00 UTC)
MINUTE_NS = 60 * 10**9


class Answer:
    """A REST client that answers the snapshot with ``body``, decoded as the real one does."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.raw = msgspec.json.encode(body)

    def get_as(self, path: str, params: dict[str, str] | None, decoder: Any) -> Any:
        assert path == "/v2/snapshot/locale/us/markets/stocks/tickers"
        return decoder.decode(self.raw)


@pytest.mark.parametrize(
    "value", [GAP_NS, GAP_NS // 1_000, GAP_NS // 1_000_000, GAP_NS // 1_000_000_000]
)
def test_instants_in_any_unit_come_out_in_ns(value: int) -> None:
    got = to_ms(np.array([float(value)]))[0] * 1_000_000
    assert not np.isnan(got)
    assert abs(got - GAP_NS) < 10**9


@pytest.mark.parametrize("value", [None, 0, -5, 12.0, float("nan"), 1e30])
def test_no_instant_is_none(value: float | None) -> None:
    assert np.isnan(to_ms(np.array([value], dtype=np.float64))[0])


def test_quiet_tickers_are_left_out_and_uncertain_ones_asked() -> None:
    universe = Universe(["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"])
    old_ns = GAP_NS - 30 * MINUTE_NS
    body = {
        "status": "OK",
        "tickers": [
            {"ticker": "AAA", "updated": old_ns},  # quiet since half an hour before the gap
            {"ticker": "BBB", "updated": old_ns, "lastTrade": {"t": (GAP_NS + 5) // 1000}},
            {"ticker": "CCC", "updated": old_ns, "min": {"t": (GAP_NS - MINUTE_NS) // 10**6}},
            {"ticker": "DDD"},  # no instant at all: asked
            {"ticker": "EEE", "updated": 0, "day": {"v": 0}},  # zeros before a first trade
            {"ticker": "ZZZ", "updated": GAP_NS},  # not ours
            {"ticker": "GGG", "updated": GAP_NS - MINUTE_NS // 2},  # within the margin
            {"ticker": "HHH", "updated": GAP_NS + MINUTE_NS},  # shown twice: the latest counts
            {"ticker": "HHH", "updated": old_ns},
            # FFF is not shown: asked
        ],
    }
    rows = active_rows(Answer(body), universe, GAP_NS)  # type: ignore[arg-type]
    asked = [universe.symbols[r] for r in rows]
    assert asked == ["BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]
    assert rows.dtype == np.intp


class Refusing:
    """A plan without the snapshot: 403, which the REST client raises as fatal."""

    def get_as(self, path: str, params: dict[str, str] | None, decoder: Any) -> Any:
        raise MassiveFatalError("Massive refused the key for /v2/snapshot (403: not entitled)")


def test_a_refused_snapshot_means_every_ticker_is_asked() -> None:
    universe = Universe(["AAA", "BBB"])
    backfill = Backfiller(lambda: cast(MassiveRest, Refusing()), universe, lambda: GAP_NS)
    assert (
        backfill._active(cast(MassiveRest, Refusing()), Gap(GAP_NS, GAP_NS + MINUTE_NS, "x"))
        is None
    )
    assert backfill.counters.snapshot_failures == 1
    assert backfill.counters.quiet == 0
