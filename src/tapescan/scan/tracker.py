"""Per-scan sequence numbers and deltas from one cycle's result to the next, vectorized."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapescan.scan.delta import Delta, Row, Snapshot
from tapescan.scan.engine import CompiledScan, ScanResult


@dataclass(slots=True)
class ScanTracker:
    """The last published result of one scan and its sequence number."""

    scan: CompiledScan
    seq: int = 0
    asof_ns: int = 0
    result: ScanResult | None = None
    _rows: dict[str, Row] | None = None
    _order: tuple[str, ...] = ()

    def update(self, result: ScanResult, asof_ns: int) -> Delta | None:
        """Record ``result``; the delta from the last one, or None when no shown value changed."""
        previous = self.result
        changed, removed = _changes(previous, result)
        symbols = self._symbols(result)
        order_changed = symbols != self._order
        if previous is not None and not changed and not removed and not order_changed:
            self.result, self.asof_ns = result, asof_ns
            return None
        upsert = tuple(tuple(row) for row in self.scan.wire_rows(result, changed))
        rows = self._rows if self._rows is not None else {}
        removed_symbols = tuple(s for s in self._order if s not in set(symbols))
        for symbol in removed_symbols:
            rows.pop(symbol, None)
        for row in upsert:
            rows[str(row[0])] = row
        delta = Delta(
            scan=self.scan.definition.id,
            seq=self.seq + 1,
            prev_seq=self.seq,
            asof_ns=asof_ns,
            upsert=upsert,
            remove=removed_symbols,
            order=symbols if order_changed else None,
        )
        self.seq, self.asof_ns, self.result = delta.seq, asof_ns, result
        self._rows, self._order = rows, symbols
        return delta

    def _symbols(self, result: ScanResult) -> tuple[str, ...]:
        names = self.scan.symbol_names
        return tuple(names[int(i)] for i in result.rows)

    def snapshot(self) -> Snapshot:
        rows = self._rows or {}
        return Snapshot(
            scan=self.scan.definition.id,
            seq=self.seq,
            asof_ns=self.asof_ns,
            columns=self.scan.definition.columns,
            rows=tuple(rows[s] for s in self._order),
        )


def _changes(previous: ScanResult | None, current: ScanResult) -> tuple[list[int], bool]:
    """Positions in ``current`` whose row is new or shows different values; whether any left."""
    if previous is None or len(previous.rows) == 0:
        return list(range(len(current.rows))), previous is not None and len(previous.rows) > 0
    sorter = np.argsort(previous.rows)
    sorted_rows = previous.rows[sorter]
    position = np.clip(np.searchsorted(sorted_rows, current.rows), 0, len(sorted_rows) - 1)
    found = sorted_rows[position] == current.rows
    before = previous.values[sorter[position]]
    same = (before == current.values) | (np.isnan(before) & np.isnan(current.values))
    unchanged = found & same.all(axis=1)
    removed = bool(np.isin(previous.rows, current.rows, invert=True).any())
    return np.flatnonzero(~unchanged).tolist(), removed
