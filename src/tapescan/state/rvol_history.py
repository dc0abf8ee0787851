"""The RVOL baseline: per-slot volume of the last N sessions and its cumulative mean.

Worst case: N x symbols x 192 x 4 B for the ring (10 x 12,000 x 192 x 4 B = 92 MB) plus
symbols x 193 x 8 B for the baseline (18.5 MB). Nothing grows: the ring drops its oldest
session when a new one arrives.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.feeds.history import SLOTS_PER_DAY

FloatArray = npt.NDArray[np.float64]


class RvolHistory:
    def __init__(self, symbols: int, sessions: int) -> None:
        if sessions <= 0:
            raise ValueError(f"RVOL needs at least one session of history, got {sessions}")
        self.sessions = sessions
        self._ring = np.zeros((sessions, symbols, SLOTS_PER_DAY), dtype=np.uint32)
        self._filled = 0
        self._next = 0
        self.baseline_cumulative = np.zeros((symbols, SLOTS_PER_DAY + 1))

    @property
    def complete(self) -> bool:
        """True once N sessions are in the ring; until then RVOL is null (history missing)."""
        return self._filled == self.sessions

    def push(self, slot_volume: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> None:
        """Add one session's (symbols, 192) per-slot volume, dropping the oldest beyond N."""
        self._ring[self._next] = np.asarray(slot_volume).astype(np.uint32)
        self._next = (self._next + 1) % self.sessions
        self._filled = min(self._filled + 1, self.sessions)
        self._recompute()

    def _recompute(self) -> None:
        if self._filled == 0:
            self.baseline_cumulative[:] = 0.0
            return
        total = self._ring.sum(axis=0, dtype=np.float64) / self._filled
        self.baseline_cumulative[:, 0] = 0.0
        np.cumsum(total, axis=1, out=self.baseline_cumulative[:, 1:])
