"""US equity sessions (XNYS) with extended hours, holidays and early closes.

Trading-day logic is done in America/New_York. A trading day starts at 04:00 ET of a session and
lasts until 04:00 ET of the next session, so weekends and holidays belong to the session before.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tapescan.market import session_table
from tapescan.market.session_table import SessionTable

ET = ZoneInfo("America/New_York")
CALENDAR_FIRST_DATE = dt.date(2015, 1, 2)
PRE_OPEN = dt.time(4, 0)
POST_CLOSE = dt.time(20, 0)
EARLY_POST_CLOSE = dt.time(17, 0)
NORMAL_REGULAR_CLOSE = dt.time(16, 0)
NS_PER_MINUTE = 60_000_000_000


class Phase(enum.Enum):
    CLOSED = "closed"
    PRE = "pre"
    REGULAR = "regular"
    POST = "post"


class NotASessionError(ValueError):
    """Raised when a date is not an XNYS trading session."""


def et_to_ns(day: dt.date, at: dt.time) -> int:
    """Unix nanoseconds of wall time ``at`` in New York on ``day`` (DST-aware)."""
    local = dt.datetime.combine(day, at, tzinfo=ET)
    return int(local.timestamp()) * 1_000_000_000 + local.microsecond * 1000


def ns_to_et(ts_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=ET)


def ns_to_utc(ts_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC).replace(
        microsecond=(ts_ns % 1_000_000_000) // 1000
    )


def datetime_to_ns(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset; give one, e.g. -05:00 or Z")
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """One session's boundaries in Unix nanoseconds."""

    date: dt.date
    pre_open_ns: int
    regular_open_ns: int
    regular_close_ns: int
    post_close_ns: int

    @property
    def early_close(self) -> bool:
        return self.regular_close_ns < et_to_ns(self.date, NORMAL_REGULAR_CLOSE)

    @property
    def extended_minutes(self) -> int:
        return (self.post_close_ns - self.pre_open_ns) // NS_PER_MINUTE

    @property
    def premarket_minutes(self) -> int:
        return (self.regular_open_ns - self.pre_open_ns) // NS_PER_MINUTE

    @property
    def regular_minutes(self) -> int:
        return (self.regular_close_ns - self.regular_open_ns) // NS_PER_MINUTE

    def phase_at(self, ts_ns: int) -> Phase:
        if ts_ns < self.pre_open_ns or ts_ns >= self.post_close_ns:
            return Phase.CLOSED
        if ts_ns < self.regular_open_ns:
            return Phase.PRE
        if ts_ns < self.regular_close_ns:
            return Phase.REGULAR
        return Phase.POST


class MarketCalendar:
    """XNYS sessions from ``exchange_calendars`` (through ``session_table``), extended to
    04:00-20:00 ET."""

    def __init__(self, table: SessionTable | None = None) -> None:
        table = table or session_table.load(CALENDAR_FIRST_DATE)
        self._sessions: list[dt.date] = list(table.sessions)
        self._open = list(table.open_ns)
        self._close = list(table.close_ns)
        self._index = {day: k for k, day in enumerate(self._sessions)}
        self._first: dt.date = self._sessions[0]
        self._last: dt.date = self._sessions[-1]

    @property
    def first_date(self) -> dt.date:
        return self._first

    @property
    def last_date(self) -> dt.date:
        return self._last

    def _check_range(self, day: dt.date) -> None:
        if not self._first <= day <= self._last:
            raise NotASessionError(
                f"{day.isoformat()} is outside the market calendar "
                f"({self._first.isoformat()} to {self._last.isoformat()})"
            )

    def is_session(self, day: dt.date) -> bool:
        self._check_range(day)
        return day in self._index

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one calendar per process, ~3,000 sessions
    def session(self, day: dt.date) -> SessionTimes:
        if not self.is_session(day):
            raise NotASessionError(f"{day.isoformat()} is not an XNYS trading session")
        k = self._index[day]
        regular_close = self._close[k]
        early = regular_close < et_to_ns(day, NORMAL_REGULAR_CLOSE)
        return SessionTimes(
            date=day,
            pre_open_ns=et_to_ns(day, PRE_OPEN),
            regular_open_ns=self._open[k],
            regular_close_ns=regular_close,
            post_close_ns=et_to_ns(day, EARLY_POST_CLOSE if early else POST_CLOSE),
        )

    def sessions_in_range(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Every session from ``start`` to ``end``, both included."""
        self._check_range(max(start, self._first))
        first = bisect.bisect_left(self._sessions, max(start, self._first))
        last = bisect.bisect_right(self._sessions, min(end, self._last))
        return self._sessions[first:last]

    def session_on_or_before(self, day: dt.date) -> dt.date:
        self._check_range(day)
        return self._sessions[bisect.bisect_right(self._sessions, day) - 1]

    def session_on_or_after(self, day: dt.date) -> dt.date:
        self._check_range(day)
        return self._sessions[bisect.bisect_left(self._sessions, day)]

    def previous_sessions(self, day: dt.date, count: int) -> list[dt.date]:
        """The ``count`` sessions strictly before ``day``, oldest first."""
        if count <= 0:
            return []
        anchor = self._index[self.session_on_or_before(day - dt.timedelta(days=1))]
        if anchor + 1 < count:
            raise NotASessionError(f"fewer than {count} sessions before {day.isoformat()}")
        return self._sessions[anchor + 1 - count : anchor + 1]

    def next_session(self, day: dt.date) -> dt.date:
        return self.session_on_or_after(day + dt.timedelta(days=1))

    def trading_day(self, ts_ns: int) -> dt.date:
        """The session whose trading day (04:00 ET to 04:00 ET of the next session) holds ts."""
        local = ns_to_et(ts_ns)
        day = local.date()
        if local.time() < PRE_OPEN:
            day -= dt.timedelta(days=1)
        return self.session_on_or_before(day)

    def phase(self, ts_ns: int) -> Phase:
        return self.session(self.trading_day(ts_ns)).phase_at(ts_ns)

    def session_in_progress(self, ts_ns: int) -> SessionTimes | None:
        """The session whose 04:00-20:00 ET window holds ``ts_ns``, if any."""
        times = self.session(self.trading_day(ts_ns))
        return times if times.phase_at(ts_ns) is not Phase.CLOSED else None


@functools.cache
def market_calendar() -> MarketCalendar:
    """The process-wide calendar (docs/design.md: from a cached table, see ``session_table``)."""
    return MarketCalendar()
