"""What the process knows about its feed: state, event counts and lag, for health and status."""

from __future__ import annotations

from dataclasses import dataclass

from tapescan.model import AggregateBatch, BandBatch, FeedEvent, FeedState, FeedStatus, HaltEvent


@dataclass(slots=True)
class FeedMonitor:
    name: str
    state: FeedState = FeedState.STARTING
    message: str = ""
    batches: int = 0
    aggregates: int = 0
    halts: int = 0
    bands: int = 0  # LULD bands published (one per symbol)
    last_event_ns: int = 0
    last_lag_ns: int = 0

    def observe(self, event: FeedEvent, now_ns: int) -> None:
        """Count ``event``, received when the process clock read ``now_ns``."""
        if isinstance(event, AggregateBatch):
            self.batches += 1
            self.aggregates += len(event)
            if len(event):
                self._saw(event.ts_event_ns, now_ns)
        elif isinstance(event, HaltEvent):
            self.halts += 1
            self._saw(event.ts_event_ns, now_ns)
        elif isinstance(event, BandBatch):
            self.bands += len(event)
        elif isinstance(event, FeedStatus):
            self.state, self.message = event.state, event.message

    def _saw(self, ts_event_ns: int, now_ns: int) -> None:
        # the lag of the newest data: a backfill's old bars do not make the feed late
        self.last_event_ns = max(self.last_event_ns, ts_event_ns)
        self.last_lag_ns = max(0, now_ns - self.last_event_ns)
