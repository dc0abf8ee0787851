"""Scatter updates into state columns: ``target[index] = op(target[index], values)``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def scatter(
    op: np.ufunc, target: npt.NDArray[Any], index: Any, values: Any, distinct: bool
) -> None:
    """target[index] = op(target[index], values) for every row, repeated indices included;
    plain indexing (several times faster than ``ufunc.at``) when no index repeats."""
    if distinct:
        target[index] = op(target[index], values)
    else:
        op.at(target, index, values)
