"""Time-of-day relative volume (RVOL) and volume spikes against a 5-minute slot baseline.

expected(t) is the average, over the last N sessions, of each session's cumulative volume from
04:00 ET at the same time of day, on a grid of 192 five-minute slots, linearly interpolated
inside the current slot. RVOL is null (NaN), never a substitute, when expected(t) is below a
minimum or the history is missing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.feeds.history import SLOT_MINUTES, SLOTS_PER_DAY

FloatArray = npt.NDArray[np.float64]
NS_PER_SLOT = SLOT_MINUTES * 60_000_000_000


def slot_position(elapsed_ns: int) -> tuple[int, float]:
    """The slot holding ``elapsed_ns`` after 04:00 ET and the fraction of it that has passed."""
    elapsed_ns = min(max(elapsed_ns, 0), SLOTS_PER_DAY * NS_PER_SLOT)
    slot = min(elapsed_ns // NS_PER_SLOT, SLOTS_PER_DAY - 1)
    return int(slot), (elapsed_ns - slot * NS_PER_SLOT) / NS_PER_SLOT


def expected_volume(bounds: FloatArray, fraction: float) -> FloatArray:
    """expected(t): ``bounds`` (2, symbols) is the cumulative baseline at the start and the end
    of t's slot, ``fraction`` the part of the slot that has passed."""
    start: FloatArray = bounds[0]
    end: FloatArray = bounds[1]
    return start + fraction * (end - start)


def expected_minute_volume(bounds: FloatArray) -> FloatArray:
    """The baseline's one-minute volume in the current slot (slot volume / 5)."""
    start: FloatArray = bounds[0]
    end: FloatArray = bounds[1]
    return (end - start) / SLOT_MINUTES


def ratio_or_null(numerator: FloatArray, denominator: FloatArray, minimum: float) -> FloatArray:
    """numerator / denominator where the denominator reaches ``minimum``, NaN elsewhere."""
    usable = denominator >= minimum
    safe = np.where(usable, denominator, 1.0)
    return np.where(usable, numerator / safe, np.nan)
