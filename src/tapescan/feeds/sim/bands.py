"""Limit Up-Limit Down price bands as the simulated market publishes them.

The bands are a percentage around a reference price, the mean price of the last
``REFERENCE_MINUTES`` minutes (here: the mean close of those minute bars), published from the
regular open to the close, and again only when the reference moves by ``REPUBLISH_MOVE`` or more
since the last publication. The percentages follow the plan's tier 2 (every symbol here): 10% at
$3 and up, 20% from $0.75, the lesser of $0.15 and 75% below; the plan's doubled bands near the
open and close and tier 1's 5% are left out. A restart (the feed resumed after bars a store
holds) follows the regular minutes it skips and publishes every symbol's bands once where it
resumes, as Massive republishes them. Memory: ``REFERENCE_MINUTES + 3`` floats per symbol
(~0.8 MB at 11,882 symbols).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.model import AggregateBatch, BandBatch

REFERENCE_MINUTES = 5
REPUBLISH_MOVE = 0.01  # a move of the reference that publishes new bands

FloatArray = npt.NDArray[np.float64]


def band_half_width(reference: FloatArray) -> FloatArray:
    """Dollars from the reference to either band, by price tier."""
    return np.where(
        reference >= 3.0,
        reference * 0.10,
        np.where(reference >= 0.75, reference * 0.20, np.minimum(0.15, reference * 0.75)),
    )


class BandPublisher:
    """Follows one session's minute bars; each regular minute gives the bands that changed."""

    def __init__(self, symbols: int) -> None:
        self._closes = np.full((REFERENCE_MINUTES, symbols), np.nan)
        self._next = 0
        self._published = np.full(symbols, np.nan)  # the reference of the last bands
        self._upper = np.full(symbols, np.nan)  # the last bands
        self._lower = np.full(symbols, np.nan)

    def reset(self) -> None:
        """The regular open: the reference starts again from the first regular minute."""
        for values in (self._closes, self._published, self._upper, self._lower):
            values.fill(np.nan)
        self._next = 0

    def published_any(self) -> bool:
        return bool((~np.isnan(self._upper)).any())

    def current(self, ts_ns: int) -> BandBatch:
        """Every symbol's last bands, published again at ``ts_ns``."""
        rows = np.flatnonzero(~np.isnan(self._upper))
        return BandBatch(rows.astype(np.int32), self._upper[rows], self._lower[rows], ts_ns)

    def after_minute(self, batch: AggregateBatch) -> BandBatch | None:
        """The bands published at the end of ``batch``'s minute (a regular one), if any."""
        if len(batch) == 0:
            return None
        closes = self._closes[self._next % REFERENCE_MINUTES]
        closes.fill(np.nan)
        closes[batch.symbol_index] = batch.close
        self._next += 1
        rows = batch.symbol_index
        window = self._closes[:, rows]
        counted = (~np.isnan(window)).sum(axis=0)
        reference = np.nansum(window, axis=0) / np.maximum(counted, 1)
        last = self._published[rows]
        with np.errstate(invalid="ignore"):
            moved = np.abs(reference / np.where(last > 0, last, 1.0) - 1.0) >= REPUBLISH_MOVE
        due = np.isnan(last) | moved
        if not due.any():
            return None
        reference = reference[due]
        rows = rows[due]
        self._published[rows] = reference
        half = band_half_width(reference)
        decimals = np.where(reference >= 1.0, 100.0, 10_000.0)  # cents; 1/100 cent below $1
        upper = np.round((reference + half) * decimals) / decimals
        lower = np.maximum(np.round((reference - half) * decimals) / decimals, 0.0001)
        self._upper[rows], self._lower[rows] = upper, lower
        return BandBatch(rows.astype(np.int32), upper, lower, batch.ts_event_ns)
