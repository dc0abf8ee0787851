"""US equity minimum price increments (Reg NMS rule 612): $0.01 from $1, $0.0001 below."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SUB_DOLLAR_TICK = 0.0001
DOLLAR_TICK = 0.01
MIN_PRICE = SUB_DOLLAR_TICK


def round_to_tick(prices: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each price rounded to its tick, never below the smallest tick."""
    rounded = np.round(prices, 4)
    cents = np.round(prices, 2)
    np.copyto(rounded, cents, where=prices >= 1.0)
    del cents
    # A sub-dollar price that rounds up to 1.0000 is on the $0.01 grid as well.
    return np.maximum(rounded, MIN_PRICE, out=rounded)
