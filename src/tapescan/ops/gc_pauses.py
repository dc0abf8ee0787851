"""How long Python's cyclic garbage collector stops the process, per generation.

A collection runs inside whatever code allocated last, so a long one delays a scan cycle or a
fan-out write like any other stall. ``GcPauses.install()`` times every collection through
``gc.callbacks``; the counts and the recent long pauses are in ``/health`` and ``/metrics``, so a
benchmark can tell a collection from other causes of a slow cycle.

Bounded: a fixed set of counters and the last ``RECENT`` long pauses (about 100 bytes each).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

GENERATIONS = 3
RECENT = 64  # long pauses kept (worst case ~6 KB)
LONG_PAUSE_NS = 1_000_000  # pauses of at least 1 ms are kept with their time


@dataclass(frozen=True, slots=True)
class Pause:
    at_ns: int  # wall clock (time.time_ns) when the collection ended
    generation: int
    ms: float
    collected: int


@dataclass
class GcPauses:
    collections: list[int] = field(default_factory=lambda: [0] * GENERATIONS)
    total_ns: list[int] = field(default_factory=lambda: [0] * GENERATIONS)
    max_ns: list[int] = field(default_factory=lambda: [0] * GENERATIONS)
    recent: deque[Pause] = field(default_factory=lambda: deque(maxlen=RECENT))
    _began_ns: int = 0
    _installed: bool = False

    def install(self) -> None:
        """Start timing collections (once; ``uninstall`` stops)."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began_ns = time.perf_counter_ns()
            return
        if not self._began_ns:
            return  # installed during a collection
        took = time.perf_counter_ns() - self._began_ns
        self._began_ns = 0
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.total_ns[generation] += took
        self.max_ns[generation] = max(self.max_ns[generation], took)
        if took >= LONG_PAUSE_NS:
            self.recent.append(
                Pause(
                    time.time_ns(), generation, round(took / 1e6, 3), int(info.get("collected", 0))
                )
            )

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts, totals and maxima per generation, and the recent long pauses."""
        # a copy first: a collection (and its callback appending here) can start inside the
        # loop below, which allocates, and a deque changed while iterated raises
        recent = tuple(self.recent)
        return {
            "collections": list(self.collections),
            "pause_ms_total": [round(ns / 1e6, 3) for ns in self.total_ns],
            "pause_ms_max": [round(ns / 1e6, 3) for ns in self.max_ns],
            "long_pauses": [
                {"at_ns": p.at_ns, "generation": p.generation, "ms": p.ms, "collected": p.collected}
                for p in recent
            ],
            "frozen_objects": gc.get_freeze_count(),
        }
