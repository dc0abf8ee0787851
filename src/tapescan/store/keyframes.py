"""When a scan's whole snapshot is recorded: every period of market time, at the first cycle of
a session, and after its definition changes; never twice for the same (session, seq)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from tapescan.scan.delta import Snapshot
from tapescan.scan.tracker import ScanTracker


class KeyframeSchedule:
    def __init__(self, period_ns: int) -> None:
        self.period_ns = period_ns
        self._next_ns = 0
        self._session: dt.date | None = None
        self._stored: dict[str, tuple[dt.date, int]] = {}
        self.recorded = 0

    def due(
        self, asof_ns: int, session: dt.date, trackers: Mapping[str, ScanTracker]
    ) -> list[Snapshot]:
        """The snapshots to record after the cycle at ``asof_ns`` (often none)."""
        if asof_ns < self._next_ns and session == self._session:
            return []
        keyframes = []
        for scan, tracker in trackers.items():
            if self._stored.get(scan) != (session, tracker.seq):
                keyframes.append(tracker.snapshot())
                self._stored[scan] = (session, tracker.seq)
        self._next_ns = asof_ns - asof_ns % self.period_ns + self.period_ns
        self._session = session
        self.recorded += len(keyframes)
        return keyframes

    def changed(self, scans: Iterable[str]) -> None:
        """Scans were replaced or deleted: keyframe them at the next cycle."""
        self._next_ns = 0
        for scan in scans:
            self._stored.pop(scan, None)
