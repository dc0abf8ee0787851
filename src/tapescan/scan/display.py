"""Display precision for scan rows on the wire: prices by US tick, percentages and ratios to 0.01.

A row is re-sent only when a rounded value changes, so a client rebuilt from deltas equals a
fresh snapshot exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tapescan.indicators.catalog import BY_NAME, Kind

FloatArray = npt.NDArray[np.float64]
WireValue = str | float | int | bool | None


def round_for_display(values: FloatArray, kind: Kind) -> FloatArray:
    if kind is Kind.PRICE:
        return np.where(np.abs(values) >= 1.0, np.round(values, 2), np.round(values, 4))
    if kind in (Kind.PERCENT, Kind.RATIO):
        return np.round(values, 2)
    if kind is Kind.COUNT:
        return np.round(values, 0)
    return values


def wire_value(value: float, kind: Kind) -> WireValue:
    if math.isnan(value):
        return None
    if kind is Kind.COUNT:
        return int(value)
    if kind is Kind.FLAG:
        return bool(value)
    return float(value) + 0.0  # normalises -0.0 to 0.0


def column_kinds(columns: Sequence[str]) -> list[Kind]:
    return [BY_NAME[name].kind for name in columns]
