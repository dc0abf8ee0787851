"""Per-second aggregates that add up exactly to a simulated minute bar.

Each active minute is spread over k distinct seconds (k at most the number of trades and at most
60): the first second opens at the minute's open, the last closes at its close, one second
touches the high and one the low, and volume and trades are split so they sum to the minute's.
Every second carries the minute's VWAP, so the dollar volume of the seconds equals the minute's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.market.ticks import round_to_tick
from tapescan.model import NS_PER_SECOND, AggregateBatch, AggregateKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SECONDS = 60


def _split(total: IntArray, parts: IntArray, weights: FloatArray) -> IntArray:
    """Split each row's ``total`` over its nonzero weights, at least 1 each, summing exactly."""
    share = weights / weights.sum(axis=1, keepdims=True)
    split = np.where(weights > 0, 1 + np.floor((total - parts)[:, None] * share), 0).astype(
        np.int64
    )
    remainder = total - split.sum(axis=1)
    rows = np.arange(len(total))
    split[rows, np.argmax(weights, axis=1)] += remainder
    return split


def split_minute(
    minute_start_ns: int,
    symbol_index: npt.NDArray[np.int32],
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    vwap: FloatArray,
    volume: IntArray,
    trades: IntArray,
    rng: np.random.Generator,
) -> list[AggregateBatch]:
    """The per-second batches (in time order, empty seconds left out) of one minute's bars."""
    n = len(symbol_index)
    if n == 0:
        return []
    count = np.clip(np.minimum(trades, volume), 1, SECONDS)
    rank = np.argsort(np.argsort(rng.random((n, SECONDS)), axis=1), axis=1)
    active = rank < count[:, None]
    rows = np.arange(n)

    closes = round_to_tick(low[:, None] + (high - low)[:, None] * rng.random((n, SECONDS)))
    last = np.where(active, np.arange(SECONDS)[None, :], -1).max(axis=1)
    closes[rows, last] = close
    positions = np.where(active, np.arange(SECONDS)[None, :], -1)
    previous = np.maximum.accumulate(positions, axis=1)
    previous = np.concatenate([np.full((n, 1), -1), previous[:, :-1]], axis=1)
    opens = np.where(previous >= 0, closes[rows[:, None], np.maximum(previous, 0)], open_[:, None])

    highs = np.maximum(np.maximum(opens, closes), vwap[:, None])
    lows = np.minimum(np.minimum(opens, closes), vwap[:, None])
    high_rank = np.floor(rng.random(n) * count).astype(np.int64)
    low_rank = np.floor(rng.random(n) * count).astype(np.int64)
    highs = np.where(rank == high_rank[:, None], high[:, None], highs)
    lows = np.where(rank == low_rank[:, None], low[:, None], lows)

    weights = np.where(active, rng.exponential(1.0, (n, SECONDS)), 0.0)
    volumes = _split(volume, count, weights)
    trade_counts = _split(trades, count, weights)

    batches: list[AggregateBatch] = []
    for second in range(SECONDS):
        here = active[:, second]
        if not here.any():
            continue
        m = int(here.sum())
        batches.append(
            AggregateBatch(
                kind=AggregateKind.SECOND,
                symbol_index=symbol_index[here],
                start_ns=np.full(m, minute_start_ns + second * NS_PER_SECOND, dtype=np.int64),
                open=opens[here, second],
                high=highs[here, second],
                low=lows[here, second],
                close=closes[here, second],
                volume=volumes[here, second],
                vwap=vwap[here],
                trades=trade_counts[here, second].astype(np.int32),
            )
        )
    return batches
