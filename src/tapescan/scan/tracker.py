"""Per-scan sequence numbers and deltas from one cycle's result to the next, vectorized."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tapescan.scan.delta import Delta, Row, Snapshot
from tapescan.scan.engine import CompiledScan, ScanResult


@dataclass(slots=True)
class ScanTracker:
    """The last published result of one scan, its wire rows and its sequence number."""

    scan: CompiledScan
    seq: int = 0
    asof_ns: int = 0
    result: ScanResult | None = None
    _rows: dict[str, Row] = field(default_factory=dict)
    _order: tuple[str, ...] = ()

    def update(self, result: ScanResult, asof_ns: int) -> Delta | None:
        """Record ``result``; the delta from the last one, or None when no shown value changed."""
        previous = self.result
        self.result, self.asof_ns = result, asof_ns
        if previous is not None and np.array_equal(previous.rows, result.rows):
            changed = np.flatnonzero(~_same_values(previous.values, result.values)).tolist()
            if not changed:
                return None
            return self._publish(result, asof_ns, changed, self._order, order_changed=False)
        symbols = tuple(self.scan.symbol_names[int(i)] for i in result.rows)
        return self._publish(result, asof_ns, _changed_rows(previous, result), symbols, True)

    def _publish(
        self,
        result: ScanResult,
        asof_ns: int,
        changed: list[int],
        symbols: tuple[str, ...],
        order_changed: bool,
    ) -> Delta:
        upsert = tuple(self.scan.wire_rows(result, changed))
        members = set(symbols)
        removed = tuple(s for s in self._order if s not in members) if order_changed else ()
        for symbol in removed:
            del self._rows[symbol]
        for row in upsert:
            self._rows[str(row[0])] = row
        delta = Delta(
            scan=self.scan.definition.id,
            seq=self.seq + 1,
            prev_seq=self.seq,
            asof_ns=asof_ns,
            upsert=upsert,
            remove=removed,
            order=symbols if order_changed else None,
        )
        self.seq, self._order = delta.seq, symbols
        return delta

    def snapshot(self) -> Snapshot:
        return Snapshot(
            scan=self.scan.definition.id,
            seq=self.seq,
            asof_ns=self.asof_ns,
            columns=self.scan.definition.columns,
            rows=tuple(self._rows[s] for s in self._order),
        )


def _same_values(
    before: npt.NDArray[np.float64], after: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    same: npt.NDArray[np.bool_] = ((before == after) | (np.isnan(before) & np.isnan(after))).all(
        axis=1
    )
    return same


def _changed_rows(previous: ScanResult | None, current: ScanResult) -> list[int]:
    """Positions in ``current`` whose symbol is new or whose shown values changed."""
    if previous is None or len(previous.rows) == 0:
        return list(range(len(current.rows)))
    sorter = np.argsort(previous.rows)
    sorted_rows = previous.rows[sorter]
    position = np.clip(np.searchsorted(sorted_rows, current.rows), 0, len(sorted_rows) - 1)
    found = sorted_rows[position] == current.rows
    unchanged = found & _same_values(previous.values[sorter[position]], current.values)
    return np.flatnonzero(~unchanged).tolist()
