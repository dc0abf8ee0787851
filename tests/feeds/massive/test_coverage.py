"""Where today's minutes are complete, across restarts (feeds/massive/coverage.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from tapescan.feeds.massive.coverage import Coverage
from tapescan.model import NS_PER_MINUTE

DAY = dt.date(2026, 11, 24)
PRE_OPEN = 1_795_510_800 * 10**9  # 04:00 ET that day
M = NS_PER_MINUTE


def kept(path: Path) -> int:
    data = json.loads(path.read_text())
    assert data["session"] == DAY.isoformat()
    return int(data["complete_until_ns"])


def test_a_start_gap_holds_the_mark_at_its_start_until_it_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "coverage.json"
    coverage = Coverage(path)
    live = PRE_OPEN + 360 * M + 20 * 10**9  # 10:00:20
    coverage.start(DAY, live - live % M)
    coverage.gap_opened(PRE_OPEN, PRE_OPEN + 360 * M)
    assert kept(path) == PRE_OPEN
    coverage.socket_bar(PRE_OPEN + 361 * M, socket_live=True)  # the socket's 10:00 bar
    assert kept(path) == PRE_OPEN  # some tickers' early minutes may still be missing
    coverage.gap_filled(PRE_OPEN, PRE_OPEN + 360 * M, failed=False)
    assert kept(path) == PRE_OPEN + 361 * M
    coverage.socket_bar(PRE_OPEN + 365 * M, socket_live=True)
    assert kept(path) == PRE_OPEN + 365 * M
    # a restart resumes from the earlier of the store's newest bar and the mark
    assert Coverage(path).resume_ns(DAY, PRE_OPEN + 366 * M) == PRE_OPEN + 365 * M
    assert Coverage(path).resume_ns(DAY, PRE_OPEN + 300 * M) == PRE_OPEN + 300 * M


def test_a_drop_moves_the_mark_back_until_its_gap_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "coverage.json"
    coverage = Coverage(path)
    coverage.start(DAY, PRE_OPEN + 360 * M)
    coverage.socket_bar(PRE_OPEN + 400 * M, socket_live=True)
    coverage.socket_left(PRE_OPEN + 399 * M)  # the minute before the drop
    assert kept(path) == PRE_OPEN + 399 * M
    coverage.socket_bar(PRE_OPEN + 402 * M, socket_live=False)  # not live: proves nothing
    coverage.gap_opened(PRE_OPEN + 399 * M, PRE_OPEN + 403 * M)
    coverage.socket_bar(PRE_OPEN + 404 * M, socket_live=True)  # live again, gap still open
    assert kept(path) == PRE_OPEN + 399 * M
    coverage.gap_filled(PRE_OPEN + 399 * M, PRE_OPEN + 403 * M, failed=True)
    assert kept(path) == PRE_OPEN + 399 * M  # a failed gap: the restart asks for it again
    coverage.gap_filled(PRE_OPEN + 399 * M, PRE_OPEN + 403 * M, failed=False)
    assert kept(path) == PRE_OPEN + 404 * M


def test_without_a_mark_for_today_a_restart_takes_the_day_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "coverage.json"
    assert Coverage(path).resume_ns(DAY, PRE_OPEN + 100 * M) is None  # no file
    yesterday = Coverage(path)
    yesterday.start(DAY - dt.timedelta(days=1), PRE_OPEN - 1440 * M)
    assert Coverage(path).resume_ns(DAY, PRE_OPEN + 100 * M) is None  # another session's
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert Coverage(path).resume_ns(DAY, PRE_OPEN + 100 * M) is None
    assert "from 04:00 again" in caplog.text
    assert Coverage(path).resume_ns(DAY, None) is None  # nothing stored: from 04:00 anyway
    assert Coverage(None).resume_ns(DAY, PRE_OPEN + 7 * M) == PRE_OPEN + 7 * M  # not kept


def test_a_mark_that_cannot_be_written_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    coverage = Coverage(blocked / "coverage.json")  # its folder is a file
    with caplog.at_level(logging.WARNING):
        coverage.start(DAY, PRE_OPEN)
    assert "cannot write" in caplog.text
    assert coverage.until_ns == PRE_OPEN


def test_a_run_live_since_before_the_session_is_complete_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "coverage.json"
    coverage = Coverage(path)  # started before 04:00: no session yet, nothing kept
    coverage.session_seen(DAY, PRE_OPEN, live_since_before=True)
    coverage.socket_bar(PRE_OPEN + 2 * M, socket_live=True)
    assert kept(path) == PRE_OPEN + 2 * M
    # the next day, after a night's drop whose gap (from 04:00) is still being filled
    tomorrow = DAY + dt.timedelta(days=1)
    coverage.gap_opened(PRE_OPEN + 1440 * M, PRE_OPEN + 1499 * M)
    coverage.session_seen(tomorrow, PRE_OPEN + 1440 * M, live_since_before=True)
    coverage.socket_bar(PRE_OPEN + 1500 * M, socket_live=True)
    data = json.loads(path.read_text())
    assert data == {"session": tomorrow.isoformat(), "complete_until_ns": PRE_OPEN + 1440 * M}
    coverage.gap_filled(PRE_OPEN + 1440 * M, PRE_OPEN + 1499 * M, failed=False)
    assert json.loads(path.read_text())["complete_until_ns"] == PRE_OPEN + 1500 * M


def test_a_gap_queued_behind_another_stays_open_when_the_first_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "coverage.json"
    coverage = Coverage(path)
    coverage.start(DAY, PRE_OPEN + 360 * M)
    coverage.gap_opened(PRE_OPEN, PRE_OPEN + 360 * M)  # today's bars, 04:00-10:00
    coverage.socket_left(PRE_OPEN + 359 * M)  # a drop at 10:00:30
    coverage.gap_opened(PRE_OPEN + 359 * M, PRE_OPEN + 365 * M)  # its gap, 09:59-10:05
    coverage.gap_filled(PRE_OPEN, PRE_OPEN + 360 * M, failed=False)
    coverage.socket_bar(PRE_OPEN + 380 * M, socket_live=True)
    assert kept(path) == PRE_OPEN + 359 * M  # the drop's gap is still being filled
    coverage.gap_filled(PRE_OPEN + 359 * M, PRE_OPEN + 365 * M, failed=False)
    assert kept(path) == PRE_OPEN + 380 * M


def test_a_gap_that_failed_yesterday_does_not_hold_todays_mark(tmp_path: Path) -> None:
    path = tmp_path / "coverage.json"
    coverage = Coverage(path)
    coverage.start(DAY, PRE_OPEN + 360 * M)
    coverage.gap_opened(PRE_OPEN + 400 * M, PRE_OPEN + 410 * M)
    coverage.gap_filled(PRE_OPEN + 400 * M, PRE_OPEN + 410 * M, failed=True)
    tomorrow = DAY + dt.timedelta(days=1)
    coverage.session_seen(tomorrow, PRE_OPEN + 1440 * M, live_since_before=True)
    coverage.socket_bar(PRE_OPEN + 1450 * M, socket_live=True)
    assert json.loads(path.read_text())["complete_until_ns"] == PRE_OPEN + 1450 * M
