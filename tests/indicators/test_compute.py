"""A cycle's columns are its own: later events never change them (the API serves them after)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from tapescan.indicators.catalog import NUMERIC_COLUMNS
from tapescan.indicators.compute import compute_columns
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.model import NS_PER_MINUTE, AggregateBatch, AggregateKind, BandBatch, Universe
from tapescan.state.market_state import MarketState

DAY = dt.date(2026, 11, 24)


def bar(start_ns: int, price: float, volume: int) -> AggregateBatch:
    return AggregateBatch(
        kind=AggregateKind.MINUTE,
        symbol_index=np.array([0], dtype=np.int32),
        start_ns=np.array([start_ns], dtype=np.int64),
        open=np.array([price]),
        high=np.array([price]),
        low=np.array([price]),
        close=np.array([price]),
        volume=np.array([volume], dtype=np.int64),
        vwap=np.array([price]),
        trades=np.array([1], dtype=np.int32),
    )


def test_columns_do_not_change_when_state_moves_on() -> None:
    state = MarketState(Universe(["AAA"]), market_calendar(), DAY)
    for at, start in enumerate((dt.time(9, 0), dt.time(9, 40))):  # pre-market, then regular
        begin = et_to_ns(DAY, start)
        state.apply(bar(begin, 10.0 + at, 1_000))
        state.apply_bands(
            BandBatch(np.array([0], np.int32), np.array([11.0]), np.array([9.0]), begin)
        )
        columns = compute_columns(state)
        before = {name: values.copy() for name, values in columns.items()}
        later = begin + NS_PER_MINUTE
        state.apply(bar(later, 20.0 + at, 5_000))  # a new high, more volume, a new price
        state.apply_bands(
            BandBatch(np.array([0], np.int32), np.array([22.0]), np.array([18.0]), later)
        )
        assert set(columns) >= NUMERIC_COLUMNS - {"luld_upper", "luld_lower"}
        for name, values in columns.items():
            np.testing.assert_array_equal(values, before[name], err_msg=name)
    assert compute_columns(state)["luld_upper"].tolist() == [22.0]
