"""One scan cycle: indicators from state, every scan evaluated, a delta per changed scan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tapescan.indicators.compute import Columns, compute_columns
from tapescan.model import Universe
from tapescan.scan.definition import ScanDefinition
from tapescan.scan.delta import Delta, Snapshot
from tapescan.scan.engine import ScanEngine, ScanResult, TextColumns
from tapescan.scan.tracker import ScanTracker
from tapescan.state.market_state import MarketState


def text_columns(universe: Universe, reference: pa.Table | None) -> dict[str, npt.NDArray[np.str_]]:
    """symbol, name, exchange and sector for every row of the universe ('' when unknown)."""
    n = len(universe)
    columns = {"symbol": np.array(universe.symbols, dtype=np.str_)}
    for name in ("name", "exchange", "sector"):
        values = np.full(n, "", dtype=object)
        if reference is not None and name in reference.column_names:
            rows = universe.indices_of(reference.column("symbol").to_pylist())
            texts = np.array([v or "" for v in reference.column(name).to_pylist()], dtype=object)
            values[rows[rows >= 0]] = texts[rows >= 0]
        columns[name] = values.astype(np.str_)
    return columns


@dataclass(slots=True)
class ScanStats:
    """How the scan loop of a running process is doing (for health and metrics)."""

    cycles: int = 0
    last_cycle_ms: float = 0.0
    deltas: int = 0
    warmup_step: str = ""  # what warm-up is doing now, for people watching it
    warmup_done: int = 0
    warmup_total: int = 0
    warmed_up: bool = False
    feed_finished: bool = False  # the feed ended and every cycle up to its last event ran


@dataclass(frozen=True, slots=True)
class CycleOutput:
    asof_ns: int
    phase: str
    columns: Columns
    results: dict[str, ScanResult]
    deltas: list[Delta]


class Scanner:
    def __init__(
        self, state: MarketState, definitions: Sequence[ScanDefinition], text: TextColumns
    ) -> None:
        self.state = state
        self.engine = ScanEngine(definitions, text)
        self.trackers = {scan_id: ScanTracker(scan) for scan_id, scan in self.engine.scans.items()}

    def replace_scans(self, definitions: Sequence[ScanDefinition]) -> None:
        """New definitions; trackers of unchanged scans keep their sequence numbers."""
        old = self.trackers
        self.engine.replace(definitions)
        self.trackers = {}
        for scan_id, scan in self.engine.scans.items():
            kept = old.get(scan_id)
            if kept is not None and kept.scan.definition == scan.definition:
                self.trackers[scan_id] = kept
            else:
                self.trackers[scan_id] = ScanTracker(scan, seq=kept.seq if kept else 0)

    def continue_sequences(self, sequences: dict[str, int]) -> None:
        """Start each scan's sequence after ``sequences`` (a restart that recorded history)."""
        for scan_id, seq in sequences.items():
            tracker = self.trackers.get(scan_id)
            if tracker is not None and tracker.result is None:
                tracker.seq = max(tracker.seq, seq)

    def cycle(self) -> CycleOutput:
        state = self.state
        columns = compute_columns(state)
        phase = state.times.phase_at(state.now_ns).value
        results = self.engine.evaluate(columns, phase)
        deltas = []
        for scan_id, result in results.items():
            delta = self.trackers[scan_id].update(result, state.now_ns)
            if delta is not None:
                deltas.append(delta)
        return CycleOutput(state.now_ns, phase, columns, results, deltas)

    def snapshot(self, scan_id: str) -> Snapshot:
        return self.trackers[scan_id].snapshot()
