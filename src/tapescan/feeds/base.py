"""The one interface every feed implements (sim, replay, massive)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from tapescan.feeds.history import Warmup
from tapescan.market.clock import Clock
from tapescan.model import FeedEvent, Universe
from tapescan.tasks import FatalError

StepCallback = Callable[[int, int], None]
"""Progress of a long step: called with (done, total); (0, total) while it prepares. It is also
where a stop request ends the step (the callback raises)."""


class FeedError(Exception):
    """A feed cannot start or go on; the message says what to fix."""


class FeedFatalError(FatalError):
    """No retry can help (a refused key, a URL that cannot work): the process ends with this
    one line and exit code 2, whether at start, in the warm-up or while following the feed."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Details:
    """A day's reference details (SYMBOLS rows) and where they came from ("store", "feed")."""

    table: pa.Table
    source: str


class Feed(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def universe(self) -> Universe: ...

    def reference(self) -> pa.Table:
        """Reference data (docs/data-formats.md) for the universe."""
        ...

    def details(
        self, session: dt.date, stored: pa.Table, on_step: StepCallback | None = None
    ) -> Details | None:
        """Reference details taken for ``session`` (SYMBOLS rows, ``updated`` that day) when
        ``reference()`` does not hold them: ``stored`` (those the store took that day) when
        they are complete, else from the source. None: ``reference()`` has everything."""
        ...

    def warmup(
        self,
        session: dt.date,
        on_step: StepCallback | None = None,
        only: Collection[dt.date] | None = None,
    ) -> Warmup:
        """Daily bars and slot volume of the sessions before ``session``: of ``only`` those
        sessions when given (the ones the store lacks), oldest first."""
        ...

    def connection(self) -> dict[str, Any] | None:
        """The feed's connection details for health (a live feed's socket), or None."""
        ...

    def interrupt(self) -> None:
        """The process is stopping: end network waits now (a request retrying, a backfill),
        from any thread; what is in flight ends within its timeout."""
        ...

    def events(
        self, clock: Clock, start_ns: int, end_ns: int | None = None, resume_ns: int | None = None
    ) -> AsyncGenerator[FeedEvent, None]:
        """Events from ``start_ns`` (the whole trading day before it at once) up to ``end_ns``.

        With ``resume_ns`` (a restart that recovered today's bars from the store), aggregates
        that ended by then are left out; halts and status still come.

        Events whose ``ts_event_ns`` is after ``clock.now_ns()`` are held back until the clock
        reaches them; the clock decides the pace (wall time, a multiple of it, or flat out).
        """
        ...
