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


def _split(total: IntArray, parts: IntArray, first: IntArray, weights: FloatArray) -> IntArray:
    """Split each row's ``total`` over its cells (rows are runs starting at ``first``), >= 1
    each, summing exactly; the rounding remainder goes to the row's first cell."""
    sums = np.add.reduceat(weights, first)
    row = np.repeat(np.arange(len(total)), parts)
    split = 1 + np.floor((total - parts)[row] * weights / sums[row]).astype(np.int64)
    split[first] += total - np.add.reduceat(split, first)
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
    """The per-second batches (in time order, empty seconds left out) of one minute's bars.

    Works on the traded (symbol, second) cells only: about a sixth of the full 60-column grid.
    """
    n = len(symbol_index)
    if n == 0:
        return []
    count = np.clip(np.minimum(trades, volume), 1, SECONDS).astype(np.int64)
    # The seconds that trade: the `count` first of a random permutation of each row.
    # (Temporaries are dropped once used: the (symbols, 60) grids are 4.7 MB each at 11,882.)
    order = np.argsort(rng.random((n, SECONDS)), axis=1)
    chosen = np.arange(SECONDS)[None, :] < count[:, None]
    row_of = np.repeat(np.arange(n), count)
    second_of = order[chosen]
    del order, chosen
    by_row = np.lexsort((second_of, row_of))  # cells of a row in time order
    second_of = second_of[by_row]
    del by_row
    first = np.cumsum(count) - count
    position = np.arange(len(row_of)) - first[row_of]
    last = position == count[row_of] - 1

    span_low, span_high = low[row_of], high[row_of]
    closes = round_to_tick(span_low + (span_high - span_low) * rng.random(len(row_of)))
    del span_low, span_high
    closes[last] = close[row_of[last]]
    del position, last
    opens = np.empty_like(closes)
    opens[1:] = closes[:-1]
    opens[first] = open_
    average = vwap[row_of]
    highs = np.maximum(np.maximum(opens, closes), average)
    lows = np.minimum(np.minimum(opens, closes), average)
    highs[first + np.floor(rng.random(n) * count).astype(np.int64)] = high
    lows[first + np.floor(rng.random(n) * count).astype(np.int64)] = low

    weights = rng.exponential(1.0, len(row_of))
    volumes = _split(volume, count, first, weights)
    trade_counts = _split(trades, count, first, weights)
    del weights

    del first, count
    in_time = np.lexsort((row_of, second_of))
    # Reordered one at a time, each old order dropped before the next copy: the cell arrays
    # (~220,000 cells in a busy minute) are 1.8 MB each.
    symbols = symbol_index[row_of[in_time]]
    del row_of
    second_of = second_of[in_time]
    opens = opens[in_time]
    highs = highs[in_time]
    lows = lows[in_time]
    closes = closes[in_time]
    volumes = volumes[in_time]
    average = average[in_time]
    trades_in_time = trade_counts[in_time].astype(np.int32)
    del trade_counts, in_time
    starts = second_of.astype(np.int64)
    starts *= NS_PER_SECOND
    starts += minute_start_ns
    bounds = np.flatnonzero(np.diff(second_of)) + 1
    batches: list[AggregateBatch] = []
    for begin, end in zip(np.r_[0, bounds], np.r_[bounds, len(second_of)], strict=True):
        batches.append(
            AggregateBatch(
                kind=AggregateKind.SECOND,
                symbol_index=symbols[begin:end],
                start_ns=starts[begin:end],
                open=opens[begin:end],
                high=highs[begin:end],
                low=lows[begin:end],
                close=closes[begin:end],
                volume=volumes[begin:end],
                vwap=average[begin:end],
                trades=trades_in_time[begin:end],
            )
        )
    return batches
