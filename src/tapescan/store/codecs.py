"""What the archive's compact layouts share: their refusal, and running sums within groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Ints = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]


class NotCompactError(ValueError):
    """A session cannot be stored in a compact layout exactly; the message says why."""


def codes(column: pa.ChunkedArray | pa.Array) -> Ints:
    """Integers that are equal where the column's values are (dictionary codes when it has them)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        return np.asarray(array.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    _, inverse = np.unique(np.asarray(array.to_numpy(zero_copy_only=False)), return_inverse=True)
    return np.asarray(inverse, dtype=np.int64)


def group_starts(*keys: npt.NDArray[np.integer[Any]]) -> Flags:
    """True at each row whose key (all of ``keys``) differs from the row before; rows of one
    group must be adjacent."""
    starts = np.zeros(len(keys[0]), dtype=np.bool_)
    starts[:1] = True
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts


def running_sums(steps: Ints, starts: Flags) -> Ints:
    """The running sum of ``steps`` that starts again at every group start."""
    if len(steps) == 0:
        return steps
    running = np.cumsum(steps)
    first = np.flatnonzero(starts)
    before = np.where(first > 0, running[np.maximum(first - 1, 0)], 0)
    sums: Ints = running - before[np.cumsum(starts) - 1]
    return sums
