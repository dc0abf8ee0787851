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
from tapescan.scan.display import MatrixRounding, WireValue, wire_column

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
        self._rounding = MatrixRounding(self.kinds)
        self._sessions = frozenset(definition.sessions)

    def _filter_mask(self, f: Filter, columns: Mapping[str, FloatArray]) -> BoolArray:
        if BY_NAME[f.field].kind is Kind.TEXT:
            text = self._text[f.field]
            if f.op == "in":
                return np.asarray(np.isin(text, list(cast(tuple[str, ...], f.value))))
            same: BoolArray = text == f.value
            return same if f.op == "==" else ~same
        values = columns[f.field]
        # Comparisons with NaN are false, so null fields drop out by themselves; only != needs
        # an explicit check.
        if f.op == "between":
            low, high = cast(tuple[float, float], f.value)
            return (values >= low) & (values <= high)
        if f.op == "in":
            return np.isin(values, np.asarray(f.value, dtype=np.float64))
        assert isinstance(f.value, float | bool)
        result = _COMPARE[f.op](values, float(f.value))
        return result & ~np.isnan(values) if f.op == "!=" else result

    def evaluate(
        self,
        columns: Mapping[str, FloatArray],
        phase: str,
        masks: dict[Filter, BoolArray] | None = None,
    ) -> ScanResult:
        """Rank the scan's rows; ``masks`` caches filter masks shared by scans in one cycle."""
        if phase not in self._sessions:
            empty = np.zeros(0, dtype=np.int64)
            return ScanResult(
                self.definition, False, empty, np.zeros((0, len(self.numeric_columns)))
            )
        key = columns[self.definition.sort.field]
        filters = self.definition.filters
        if filters:
            cache = masks if masks is not None else {}
            parts = []
            for f in filters:
                part = cache.get(f)
                if part is None:
                    part = cache[f] = self._filter_mask(f, columns)
                parts.append(part)
            mask = parts[0] & parts[1] if len(parts) > 1 else parts[0].copy()
            for part in parts[2:]:
                mask &= part
            candidates = np.flatnonzero(mask)
        else:
            candidates = np.arange(len(key))
        keys = key[candidates]
        ranked = ~np.isnan(keys)
        candidates, keys = candidates[ranked], keys[ranked]
        ranked_key = keys if self.definition.sort.direction == "asc" else -keys
        limit = self.definition.limit
        if len(candidates) > 2 * limit:
            # Only the best `limit` are needed: cut at the limit-th key (keeping its ties).
            cutoff = np.partition(ranked_key, limit - 1)[limit - 1]
            best = ranked_key <= cutoff
            candidates, ranked_key = candidates[best], ranked_key[best]
        # Ties go to the alphabetically first symbol, so the order is fully determined.
        order = np.lexsort((self._symbol_rank[candidates], ranked_key))[:limit]
        rows = candidates[order]
        raw = np.empty((len(rows), len(self.numeric_columns)))
        for j, name in enumerate(self.numeric_columns):
            raw[:, j] = columns[name][rows]
        return ScanResult(self.definition, True, rows, self._rounding.apply(raw))

    def wire_rows(
        self, result: ScanResult, positions: Sequence[int] | None = None
    ) -> list[tuple[WireValue, ...]]:
        """Rows as tuples in ``columns`` order (symbol first), for the given positions or all."""
        chosen = (
            np.arange(len(result.rows)) if positions is None else np.asarray(positions, np.int64)
        )
        rows = result.rows[chosen]
        values = result.values[chosen]
        numeric = iter(range(values.shape[1]))
        columns: list[list[WireValue]] = []
        for name in self.definition.columns:
            kind = BY_NAME[name].kind
            if name == "symbol":
                columns.append([self.symbol_names[int(i)] for i in rows])
            elif kind is Kind.TEXT:
                columns.append(self._text[name][rows].tolist())
            else:
                columns.append(wire_column(values[:, next(numeric)], kind))
        return list(zip(*columns, strict=True))


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
        masks: dict[Filter, BoolArray] = {}
        return {scan_id: s.evaluate(columns, phase, masks) for scan_id, s in self.scans.items()}
