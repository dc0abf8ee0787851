"""The RVOL baseline: per-slot volume of the last N sessions and its cumulative mean.

The ring holds N x symbols x 192 x 4 B (10 x 12,000 x 192 x 4 B = 92 MB) but is needed only
when a session is added (warm-up, and once a day at the rollover). The baseline is 193 slot
boundaries x symbols x 8 B (18.5 MB), of which a scan cycle reads two boundaries (the current
slot's), so it is laid out by boundary. Given a file, both live in file-backed mappings whose
pages are handed back after each use: the ring's after each session added, the baseline's when
the day moves to another slot, so between rollovers they cost ~0.2 MB resident instead of
110 MB. Nothing grows: the ring drops its oldest session when a new one arrives.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tapescan.feeds.history import SLOTS_PER_DAY

FloatArray = npt.NDArray[np.float64]
RECOMPUTE_SYMBOLS = 1_024  # symbols summed at once when the baseline is made again


class RvolHistory:
    def __init__(self, symbols: int, sessions: int, ring_file: Path | None = None) -> None:
        if sessions <= 0:
            raise ValueError(f"RVOL needs at least one session of history, got {sessions}")
        self.sessions = sessions
        shape = (sessions, symbols, SLOTS_PER_DAY)
        self._ring: npt.NDArray[np.uint32]
        if ring_file is None:
            self._ring = np.zeros(shape, dtype=np.uint32)
        else:
            ring_file.parent.mkdir(parents=True, exist_ok=True)
            # a fresh file of zeros: pages become resident only when touched
            self._ring = np.memmap(ring_file, dtype=np.uint32, mode="w+", shape=shape)
        self._filled = 0
        self._next = 0
        # cumulative mean volume at each slot boundary from 04:00 ET, (193, symbols)
        self._baseline: FloatArray
        if ring_file is None:
            self._baseline = np.zeros((SLOTS_PER_DAY + 1, symbols))
        else:
            baseline_file = ring_file.with_suffix(".baseline.f64")
            self._baseline = np.memmap(
                baseline_file, dtype=np.float64, mode="w+", shape=(SLOTS_PER_DAY + 1, symbols)
            )
        self._slot_in_use = -1

    @property
    def complete(self) -> bool:
        """True once N sessions are in the ring; until then RVOL is null (history missing)."""
        return self._filled == self.sessions

    def push(
        self,
        slot_volume: npt.NDArray[np.floating] | npt.NDArray[np.integer],
        recompute: bool = True,
    ) -> None:
        """Add one session's (symbols, 192) per-slot volume, dropping the oldest beyond N.

        Warm-up pushes its sessions with ``recompute=False`` and calls ``recompute`` once.
        """
        self._ring[self._next] = slot_volume  # cast on assignment: no copy of the session
        self._next = (self._next + 1) % self.sessions
        self._filled = min(self._filled + 1, self.sessions)
        self._release()
        if recompute:
            self.recompute()

    def baseline(self, slot: int) -> FloatArray:
        """Boundaries ``slot`` and ``slot + 1`` of the baseline, (2, symbols): the cumulative
        mean volume at the start and at the end of that 5-minute slot.

        Moving to another slot hands the pages of the boundaries left behind back to the OS.
        """
        if slot != self._slot_in_use:
            _release(self._baseline)
            self._slot_in_use = slot
        return self._baseline[slot : slot + 2]

    @property
    def baseline_cumulative(self) -> FloatArray:
        """The whole baseline, (193, symbols) (tests and tools; scans read ``baseline``)."""
        return self._baseline

    def _release(self) -> None:
        """Hand the ring's pages back to the OS (they stay in the file) until the next push."""
        _release(self._ring)

    def recompute(self) -> None:
        """The baseline from the ring, in place and a block of symbols at a time: the pages of a
        block (~10 MB of ring and baseline for 1,024 symbols) are handed back before the next
        block is read, so neither the 92 MB ring nor the 18.5 MB baseline is ever resident.

        Sums of whole shares are exact in float64, so the order of the sessions does not
        change a bit of the result.
        """
        self._baseline[0] = 0.0
        symbols = self._baseline.shape[1]
        for first in range(0, symbols, RECOMPUTE_SYMBOLS):
            block = slice(first, min(first + RECOMPUTE_SYMBOLS, symbols))
            mean = self._baseline[1:, block]
            mean[:] = 0.0
            if self._filled > 0:
                for position in range(self._filled):  # unwrapped: 0.._filled-1 are full
                    np.add(mean, self._ring[position, block].T, out=mean)
                mean /= self._filled
                np.cumsum(mean, axis=0, out=mean)
            self._release()
            _release(self._baseline)
        self._slot_in_use = -1


def _release(array: npt.NDArray[np.generic]) -> None:
    """Write a file-backed array's pages out and hand them back to the OS (no-op in memory)."""
    mapping = getattr(array, "_mmap", None)
    if isinstance(mapping, mmap.mmap):
        array.flush()  # type: ignore[attr-defined]
        mapping.madvise(mmap.MADV_DONTNEED)
