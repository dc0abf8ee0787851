"""Wilder's ATR(14) on daily bars, kept incrementally for every symbol at once.

TR = max(H - L, |H - Cprev|, |L - Cprev|) from a symbol's second bar on; the first ATR is the mean
of the first 14 TRs; after that ATR = (ATR_prev * 13 + TR) / 14. This equals TA-Lib's ATR.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ATR_PERIOD = 14


def true_range(high: FloatArray, low: FloatArray, previous_close: FloatArray) -> FloatArray:
    return np.maximum(
        high - low, np.maximum(np.abs(high - previous_close), np.abs(low - previous_close))
    )


class WilderAtr:
    """ATR state per symbol; ``update`` takes one daily bar for the symbols in ``mask``."""

    def __init__(self, symbols: int, period: int = ATR_PERIOD) -> None:
        self.period = period
        self.atr = np.full(symbols, np.nan)
        self.last_close = np.full(symbols, np.nan)
        self._seed_sum = np.zeros(symbols)
        self._ranges = np.zeros(symbols, dtype=np.int64)

    def update(self, high: FloatArray, low: FloatArray, close: FloatArray, mask: BoolArray) -> None:
        has_range = mask & ~np.isnan(self.last_close)
        tr = np.where(has_range, true_range(high, low, self.last_close), 0.0)
        seeding = has_range & (self._ranges < self.period)
        self._seed_sum += np.where(seeding, tr, 0.0)
        self._ranges += has_range
        seeded = seeding & (self._ranges == self.period)
        self.atr = np.where(seeded, self._seed_sum / self.period, self.atr)
        smoothing = has_range & ~seeding
        self.atr = np.where(smoothing, (self.atr * (self.period - 1) + tr) / self.period, self.atr)
        self.last_close = np.where(mask, close, self.last_close)
