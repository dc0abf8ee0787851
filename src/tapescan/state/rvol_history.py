"""The RVOL baseline: per-slot volume of the last N sessions and its cumulative mean.

The ring holds N x symbols x 192 x 4 B (10 x 12,000 x 192 x 4 B = 92 MB) but is needed only
when a session is added (warm-up, and once a day at the rollover). Given a file, the ring lives
in a file-backed mapping whose pages are handed back after each use, so it costs no resident
memory between rollovers; only the baseline stays resident (symbols x 193 x 8 B = 18.5 MB).
Nothing grows: the ring drops its oldest session when a new one arrives.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tapescan.feeds.history import SLOTS_PER_DAY

FloatArray = npt.NDArray[np.float64]


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
        self.baseline_cumulative = np.zeros((symbols, SLOTS_PER_DAY + 1))

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

    def _release(self) -> None:
        """Hand the ring's pages back to the OS (they stay in the file) until the next push."""
        mapping = getattr(self._ring, "_mmap", None)
        if isinstance(mapping, mmap.mmap):
            self._ring.flush()  # type: ignore[attr-defined]
            mapping.madvise(mmap.MADV_DONTNEED)

    def recompute(self) -> None:
        """The baseline from the ring, one session at a time (each session's pages are handed
        back before the next is read) and in place: no temporary of the baseline's size.

        Sums of whole shares are exact in float64, so the order of the sessions does not
        change a bit of the result.
        """
        self.baseline_cumulative[:, 0] = 0.0
        mean = self.baseline_cumulative[:, 1:]
        mean[:] = 0.0
        if self._filled == 0:
            return
        for position in range(self._filled):  # before the ring wraps, 0.._filled-1 are full
            np.add(mean, self._ring[position], out=mean)
            self._release()
        mean /= self._filled
        np.cumsum(mean, axis=1, out=mean)
