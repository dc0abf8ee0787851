"""Which (symbol, whole-number) keys a file has shown so far, one bit each, to find duplicates.

Validation streams files far larger than memory, so duplicate keys cannot be found by holding
the keys. A key here is a symbol and an integer (the minute of a minute bar, the day of a daily
bar); they are kept as bits in blocks of BLOCK_SPAN consecutive integers per symbol: a block is
one row of BLOCK_SPAN / 8 = 180 bytes per symbol. Minute bars use one block per UTC day, so the
bits take about 180 bytes x symbols x UTC days the file covers (rows rounded up to 1,024, and up
to 25% more in blocks that grew as symbols appeared): 11,882 symbols over 16 days (an 11-session
file) is 35 MB, whatever the number of rows and in any row order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

BLOCK_SPAN = 1440  # integers per block: the minutes of a day
BLOCK_BYTES = BLOCK_SPAN // 8
_ROW_STEP = 1024  # blocks have a multiple of this many symbol rows

Int64Array = npt.NDArray[np.int64]


class SeenKeys:
    """Bits for the (symbol, value) keys added so far, grouped by value // BLOCK_SPAN."""

    def __init__(self) -> None:
        self._symbol_ids: dict[str, int] = {}
        self._blocks: dict[int, npt.NDArray[np.uint8]] = {}

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for block in self._blocks.values())

    def symbol_ids(self, symbols: pa.Array) -> Int64Array:
        """A stable small integer for each symbol (no nulls), numbered as they first appear."""
        encoded = pc.dictionary_encode(symbols)
        known = self._symbol_ids
        names = encoded.dictionary.to_pylist()
        ids = np.fromiter((known.setdefault(name, len(known)) for name in names), np.int64)
        indices: Int64Array = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        result: Int64Array = ids[indices]
        return result

    def add(self, symbol_ids: Int64Array, values: Int64Array) -> int | None:
        """Add keys in file order; the index of the first one seen before (then nothing is added).

        A key repeated within ``symbol_ids``/``values`` counts from its second occurrence.
        """
        if len(values) == 0:
            return None
        block, offset = np.divmod(values, BLOCK_SPAN)
        repeated = self._repeated_within(symbol_ids, values)
        for number in np.unique(block).tolist():
            rows = np.flatnonzero(block == number)
            bits = self._block(number, int(symbol_ids[rows].max()) + 1)
            byte, mask = offset[rows] >> 3, (1 << (offset[rows] & 7)).astype(np.uint8)
            repeated[rows] |= (bits[symbol_ids[rows], byte] & mask) != 0
        if repeated.any():
            return int(np.argmax(repeated))
        for number in np.unique(block).tolist():
            rows = np.flatnonzero(block == number)
            mask = (1 << (offset[rows] & 7)).astype(np.uint8)
            np.bitwise_or.at(self._blocks[number], (symbol_ids[rows], offset[rows] >> 3), mask)
        return None

    @staticmethod
    def _repeated_within(symbol_ids: Int64Array, values: Int64Array) -> npt.NDArray[np.bool_]:
        """True for each key that an earlier row of the same batch already has."""
        order = np.lexsort((values, symbol_ids))  # stable: equal keys stay in row order
        same = (np.diff(symbol_ids[order]) == 0) & (np.diff(values[order]) == 0)
        repeated = np.zeros(len(values), dtype=bool)
        repeated[order[1:][same]] = True
        return repeated

    def _block(self, number: int, rows: int) -> npt.NDArray[np.uint8]:
        """The block of values ``number``, with room for at least ``rows`` symbols.

        A new block has a row for every symbol known so far; one that must grow gets 25% more
        rows than it needs, so a file whose symbols keep appearing grows each block a few times.
        """
        block = self._blocks.get(number)
        if block is not None and len(block) >= rows:
            return block
        wanted = max(rows, len(self._symbol_ids)) if block is None else rows + rows // 4
        size = -(-wanted // _ROW_STEP) * _ROW_STEP
        grown = np.zeros((size, BLOCK_BYTES), dtype=np.uint8)
        if block is not None:
            grown[: len(block)] = block
        self._blocks[number] = grown
        return grown
