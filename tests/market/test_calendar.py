import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.market import session_table
from tapescan.market.calendar import (
    CALENDAR_FIRST_DATE,
    MarketCalendar,
    NotASessionError,
    Phase,
    et_to_ns,
    market_calendar,
    ns_to_et,
    ns_to_utc,
)
from tests.api.server import start_server

CAL = market_calendar()


def utc(text: str) -> int:
    moment = dt.datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000_000


@pytest.mark.parametrize("day", [dt.date(2026, 6, 19), dt.date(2026, 11, 26)])
def test_juneteenth_and_thanksgiving_2026_are_closed(day: dt.date) -> None:
    assert not CAL.is_session(day)
    with pytest.raises(NotASessionError, match=day.isoformat()):
        CAL.session(day)


def test_day_after_thanksgiving_closes_regular_trading_at_1300_and_post_market_at_1700() -> None:
    times = CAL.session(dt.date(2026, 11, 27))
    assert times.early_close
    assert ns_to_et(times.regular_open_ns).time() == dt.time(9, 30)
    assert ns_to_et(times.regular_close_ns).time() == dt.time(13, 0)
    assert ns_to_et(times.post_close_ns).time() == dt.time(17, 0)
    assert times.regular_minutes == 210
    assert times.extended_minutes == 13 * 60


def test_a_normal_session_runs_0400_to_2000_et() -> None:
    times = CAL.session(dt.date(2026, 11, 25))
    assert not times.early_close
    assert ns_to_utc(times.pre_open_ns) == dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    assert ns_to_utc(times.post_close_ns) == dt.datetime(2026, 11, 26, 1, 0, tzinfo=dt.UTC)
    assert (times.premarket_minutes, times.regular_minutes, times.extended_minutes) == (
        330,
        390,
        960,
    )


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        (dt.date(2026, 3, 6), 9),  # Friday before spring forward: EST
        (dt.date(2026, 3, 8), 8),  # the switch day itself (a Sunday): 04:00 is already EDT
        (dt.date(2026, 3, 9), 8),  # first session on EDT
        (dt.date(2026, 10, 30), 8),  # Friday before fall back: EDT
        (dt.date(2026, 11, 1), 9),  # the switch day (Sunday): 04:00 is EST again
        (dt.date(2026, 11, 2), 9),  # first session on EST
    ],
)
def test_0400_et_maps_to_the_right_utc_hour_across_dst_switches(
    day: dt.date, utc_hour: int
) -> None:
    assert ns_to_utc(et_to_ns(day, dt.time(4, 0))) == dt.datetime(
        day.year, day.month, day.day, utc_hour, tzinfo=dt.UTC
    )
    if CAL.is_session(day):
        assert CAL.session(day).pre_open_ns == et_to_ns(day, dt.time(4, 0))


@pytest.mark.parametrize(
    ("instant", "phase", "day"),
    [
        ("2026-11-25T08:59:59+00:00", Phase.CLOSED, dt.date(2026, 11, 24)),  # 03:59:59 ET
        ("2026-11-25T09:00:00+00:00", Phase.PRE, dt.date(2026, 11, 25)),
        ("2026-11-25T14:29:59+00:00", Phase.PRE, dt.date(2026, 11, 25)),
        ("2026-11-25T14:30:00+00:00", Phase.REGULAR, dt.date(2026, 11, 25)),
        ("2026-11-25T21:00:00+00:00", Phase.POST, dt.date(2026, 11, 25)),
        ("2026-11-26T01:00:00+00:00", Phase.CLOSED, dt.date(2026, 11, 25)),
        ("2026-11-26T16:00:00+00:00", Phase.CLOSED, dt.date(2026, 11, 25)),  # Thanksgiving
        ("2026-11-27T18:00:00+00:00", Phase.POST, dt.date(2026, 11, 27)),  # 13:00 ET early close
        ("2026-11-27T22:00:00+00:00", Phase.CLOSED, dt.date(2026, 11, 27)),  # 17:00 ET
        ("2026-11-29T12:00:00+00:00", Phase.CLOSED, dt.date(2026, 11, 27)),  # Sunday
        ("2026-03-09T08:00:00+00:00", Phase.PRE, dt.date(2026, 3, 9)),  # 04:00 EDT
    ],
)
def test_phase_and_trading_day_of_an_instant(instant: str, phase: Phase, day: dt.date) -> None:
    ts = utc(instant)
    assert CAL.phase(ts) is phase
    assert CAL.trading_day(ts) == day


def test_trading_day_rolls_over_at_0400_et_not_at_midnight_or_utc_midnight() -> None:
    # 23:30 ET on 2026-11-24 is already 2026-11-25 in UTC; 03:59 ET is still the 24th's day.
    assert CAL.trading_day(utc("2026-11-25T04:30:00+00:00")) == dt.date(2026, 11, 24)
    assert CAL.trading_day(utc("2026-11-25T08:59:00+00:00")) == dt.date(2026, 11, 24)
    assert CAL.trading_day(utc("2026-11-25T09:00:00+00:00")) == dt.date(2026, 11, 25)


def test_previous_sessions_skip_weekends_and_holidays() -> None:
    assert CAL.previous_sessions(dt.date(2026, 11, 27), 3) == [
        dt.date(2026, 11, 23),
        dt.date(2026, 11, 24),
        dt.date(2026, 11, 25),
    ]
    assert CAL.next_session(dt.date(2026, 11, 25)) == dt.date(2026, 11, 27)
    assert CAL.session_on_or_before(dt.date(2026, 6, 19)) == dt.date(2026, 6, 18)
    assert dt.date(2026, 6, 19) not in CAL.sessions_in_range(
        dt.date(2026, 6, 1), dt.date(2026, 6, 30)
    )


def test_session_in_progress_is_none_outside_extended_hours() -> None:
    assert CAL.session_in_progress(utc("2026-11-25T15:00:00+00:00")) is not None
    assert CAL.session_in_progress(utc("2026-11-26T15:00:00+00:00")) is None


def test_dates_outside_the_calendar_are_refused_with_the_range() -> None:
    with pytest.raises(NotASessionError, match="outside the market calendar"):
        CAL.is_session(dt.date(1999, 1, 4))


# The table the calendar is built from, against exchange_calendars itself (pandas is fine in a
# test process; the serving process never imports it).


def _xnys() -> Any:
    import exchange_calendars as xcals  # noqa: PLC0415

    return xcals.get_calendar("XNYS", start=CALENDAR_FIRST_DATE.isoformat())


def test_the_session_table_is_exchange_calendars_own_sessions_opens_and_closes() -> None:
    import pandas as pd  # noqa: PLC0415

    xnys = _xnys()
    assert (CAL.first_date, CAL.last_date) == (
        xnys.first_session.date(),
        xnys.last_session.date(),
    )
    sessions = [ts.date() for ts in xnys.sessions]
    assert CAL.sessions_in_range(CAL.first_date, CAL.last_date) == sessions
    for day in [*sessions[::37], dt.date(2026, 11, 27), dt.date(2026, 12, 24)]:
        times = CAL.session(day)
        assert times.regular_open_ns == xnys.session_open(pd.Timestamp(day)).value
        assert times.regular_close_ns == xnys.session_close(pd.Timestamp(day)).value


@settings(max_examples=300, deadline=None)
@given(
    # from April 2015: 45 sessions before it are still in exchange_calendars' (from 2015-01-02)
    day=st.dates(min_value=dt.date(2015, 4, 1), max_value=dt.date(2027, 11, 1)),
    count=st.integers(1, 45),
)
def test_lookups_agree_with_exchange_calendars(day: dt.date, count: int) -> None:
    import pandas as pd  # noqa: PLC0415

    xnys = XNYS
    label = pd.Timestamp(day)
    assert CAL.is_session(day) == bool(xnys.is_session(label))
    assert CAL.session_on_or_before(day) == xnys.date_to_session(label, "previous").date()
    assert CAL.session_on_or_after(day) == xnys.date_to_session(label, "next").date()
    anchor = xnys.date_to_session(pd.Timestamp(day - dt.timedelta(days=1)), "previous")
    expected = [ts.date() for ts in xnys.sessions_window(anchor, -count)]
    assert CAL.previous_sessions(day, count) == expected
    end = day + dt.timedelta(days=count)
    assert CAL.sessions_in_range(day, end) == [
        ts.date() for ts in xnys.sessions_in_range(label, pd.Timestamp(min(end, CAL.last_date)))
    ]


XNYS = _xnys()


def test_the_table_is_cached_and_a_damaged_cache_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    table = session_table.load(CALENDAR_FIRST_DATE)
    (cached,) = (tmp_path / "tapescan").glob("xnys-*.json")
    assert session_table.load(CALENDAR_FIRST_DATE) == table
    cached.write_bytes(b'{"not": "a table"')
    assert session_table.load(CALENDAR_FIRST_DATE) == table
    assert MarketCalendar(table).sessions_in_range(CAL.first_date, CAL.last_date) == (
        CAL.sessions_in_range(CAL.first_date, CAL.last_date)
    )


def test_an_unwritable_cache_only_costs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    table = session_table.load(CALENDAR_FIRST_DATE)
    assert table.sessions[0] == CAL.first_date


def test_a_running_tapescan_has_neither_pandas_nor_exchange_calendars_loaded(
    tmp_path: Path,
) -> None:
    """pandas (~55 MB resident) is kept out of the serving process: the calendar comes from the
    session table and pyarrow is told pandas is absent (tapescan.arrow_setup)."""
    server = start_server(tmp_path)
    try:
        server.health(lambda h: h["scans"]["warmed_up"])
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        modules = [line.split()[-1] for line in maps.splitlines() if "site-packages" in line]
        assert modules, "no library of site-packages mapped: the check would see nothing"
        assert any("/pyarrow/" in m for m in modules)
        assert not [m for m in modules if "/pandas/" in m]
    finally:
        server.stop()
