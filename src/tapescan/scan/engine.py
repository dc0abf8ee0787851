"""Compiled scans evaluated over every symbol at once: no per-symbol Python loop."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from tapescan.indicators.catalog import BY_NAME, Kind
from tapescan.scan.definition import Filter, ScanDefinition
from tapescan.scan.display import WireValue, round_for_display, wire_value

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.int64]
TextColumns = Mapping[str, npt.NDArray[np.str_]]

_COMPARE: dict[str, Callable[[FloatArray, float], BoolArray]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True, eq=False)
class ScanResult:
    """Ranked rows of one scan: symbol rows and display-rounded numeric values (NaN = null)."""

    scan: ScanDefinition
    active: bool
    rows: IndexArray
    values: FloatArray  # (len(rows), len(numeric columns))


class CompiledScan:
    def __init__(
        self,
        definition: ScanDefinition,
        text: TextColumns,
        symbol_rank: IndexArray,
        symbol_names: Sequence[str],
    ) -> None:
        self.definition = definition
        self._text = text
        self._symbol_rank = symbol_rank
        self.symbol_names = symbol_names
        self.numeric_columns = tuple(
            c for c in definition.columns if BY_NAME[c].kind is not Kind.TEXT
        )
        self.kinds = tuple(BY_NAME[c].kind for c in self.numeric_columns)
        self._sessions = frozenset(definition.sessions)

    def _filter_mask(self, f: Filter, columns: Mapping[str, FloatArray]) -> BoolArray:
        if BY_NAME[f.field].kind is Kind.TEXT:
            text = self._text[f.field]
            if f.op == "in":
                return np.asarray(np.isin(text, list(cast(tuple[str, ...], f.value))))
            same: BoolArray = text == f.value
            return same if f.op == "==" else ~same
        values = columns[f.field]
        known = ~np.isnan(values)
        if f.op == "between":
            low, high = cast(tuple[float, float], f.value)
            return known & (values >= low) & (values <= high)
        if f.op == "in":
            assert isinstance(f.value, tuple)
            return known & np.isin(values, np.asarray(f.value, dtype=np.float64))
        assert isinstance(f.value, float | bool)
        return known & _COMPARE[f.op](values, float(f.value))

    def evaluate(self, columns: Mapping[str, FloatArray], phase: str) -> ScanResult:
        if phase not in self._sessions:
            empty = np.zeros(0, dtype=np.int64)
            return ScanResult(
                self.definition, False, empty, np.zeros((0, len(self.numeric_columns)))
            )
        key = columns[self.definition.sort.field]
        mask = ~np.isnan(key)
        for f in self.definition.filters:
            mask &= self._filter_mask(f, columns)
        candidates = np.flatnonzero(mask)
        ranked_key = (
            key[candidates] if self.definition.sort.direction == "asc" else -key[candidates]
        )
        # Ties go to the alphabetically first symbol, so the order is fully determined.
        order = np.lexsort((self._symbol_rank[candidates], ranked_key))[: self.definition.limit]
        rows = candidates[order]
        values = np.empty((len(rows), len(self.numeric_columns)))
        for j, (name, kind) in enumerate(zip(self.numeric_columns, self.kinds, strict=True)):
            values[:, j] = round_for_display(columns[name][rows], kind)
        return ScanResult(self.definition, True, rows, values)

    def wire_rows(
        self, result: ScanResult, positions: Sequence[int] | None = None
    ) -> list[list[WireValue]]:
        """Rows as lists in ``columns`` order (symbol first), for the given positions or all."""
        chosen = range(len(result.rows)) if positions is None else positions
        out: list[list[WireValue]] = []
        for i in chosen:
            row_index = int(result.rows[i])
            numeric = iter(zip(result.values[i].tolist(), self.kinds, strict=True))
            row: list[WireValue] = []
            for name in self.definition.columns:
                if BY_NAME[name].kind is Kind.TEXT:
                    row.append(str(self._text[name][row_index]))
                else:
                    value, kind = next(numeric)
                    row.append(wire_value(value, kind))
            out.append(row)
        return out


def symbol_ranks(symbols: npt.NDArray[np.str_]) -> IndexArray:
    """Alphabetical rank of each symbol (the tie-breaker of every scan)."""
    ranks = np.empty(len(symbols), dtype=np.int64)
    ranks[np.argsort(symbols, kind="stable")] = np.arange(len(symbols))
    return ranks


class ScanEngine:
    """Every scan compiled once for a universe; ``evaluate`` runs them all over the columns."""

    def __init__(self, definitions: Sequence[ScanDefinition], text: TextColumns) -> None:
        self._text = text
        self._ranks = symbol_ranks(text["symbol"])
        self._names: list[str] = text["symbol"].tolist()
        self.scans: dict[str, CompiledScan] = {}
        self.replace(definitions)

    def replace(self, definitions: Sequence[ScanDefinition]) -> None:
        self.scans = {
            d.id: CompiledScan(d, self._text, self._ranks, self._names) for d in definitions
        }

    def evaluate(self, columns: Mapping[str, FloatArray], phase: str) -> dict[str, ScanResult]:
        return {scan_id: scan.evaluate(columns, phase) for scan_id, scan in self.scans.items()}
