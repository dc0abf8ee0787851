"""Display precision for scan rows on the wire: prices by US tick, percentages and ratios to 0.01.

A row is re-sent only when a rounded value changes, so a client rebuilt from deltas equals a
fresh snapshot exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tapescan.indicators.catalog import BY_NAME, Kind

FloatArray = npt.NDArray[np.float64]
WireValue = str | float | int | bool | None


class MatrixRounding:
    """Rounds a (rows, columns) matrix whose columns have ``kinds`` in a few vectorized calls."""

    def __init__(self, kinds: Sequence[Kind]) -> None:
        self._prices = np.array([k is Kind.PRICE for k in kinds], dtype=np.bool_)
        self._hundredths = np.array(
            [k in (Kind.PERCENT, Kind.RATIO) for k in kinds], dtype=np.bool_
        )
        self._counts = np.array([k is Kind.COUNT for k in kinds], dtype=np.bool_)
        self._any_price = bool(self._prices.any())

    def apply(self, raw: FloatArray) -> FloatArray:
        out = raw.copy()
        out[:, self._hundredths] = np.round(raw[:, self._hundredths], 2)
        out[:, self._counts] = np.round(raw[:, self._counts], 0)
        if self._any_price:
            prices = raw[:, self._prices]
            out[:, self._prices] = np.where(
                np.abs(prices) >= 1.0, np.round(prices, 2), np.round(prices, 4)
            )
        return out


def wire_column(values: FloatArray, kind: Kind) -> list[WireValue]:
    """One column of rounded values as JSON-ready Python values (None for null)."""
    missing = np.isnan(values)
    if kind is Kind.COUNT:
        converted = np.where(missing, 0, values).astype(np.int64).astype(object)
    elif kind is Kind.FLAG:
        converted = (values != 0).astype(object)
    else:
        converted = (values + 0.0).astype(object)  # + 0.0 turns -0.0 into 0.0
    if missing.any():
        converted[missing] = None
    out: list[WireValue] = converted.tolist()
    return out


def column_kinds(columns: Sequence[str]) -> list[Kind]:
    return [BY_NAME[name].kind for name in columns]
