"""Retention on both backends: old sessions move to the archive, the hot store stays bounded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tapescan.config import Settings
from tapescan.store.archive import Archive, ArchiveError
from tapescan.store.base import Store
from tapescan.store.postgres import PostgresStore
from tapescan.store.retention import RetentionStep, merge_by_key, retire
from tapescan.store.tables import DAILY_BARS, SESSION_TABLES, SLOT_VOLUME, TABLES
from tests.store.test_archive import key_order, session_data, sessions, slot_volume
from tests.store.test_contract import minute_bars

RETIRED_TABLES = [spec.name for spec in SESSION_TABLES]


def keep(n: int) -> Settings:
    return Settings(
        retention_minute_sessions=n, retention_event_sessions=n, retention_slot_sessions=n
    )


def fill(store: Store, days: list[dt.date], size: int = 1) -> dict[tuple[str, dt.date], pa.Table]:
    written = {}
    for day in days:
        for name, table in session_data(day, seed=day.toordinal(), size=size).items():
            store.write(name, table)
            written[name, day] = table
    return written


def partitions(store: PostgresStore) -> list[str]:
    found = store.read(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1",
        [store.schema],
        pa.schema([("name", pa.string())]),
    )
    return list(found.column("name").to_pylist())


def test_retire_keeps_the_newest_sessions_and_archives_the_rest_exactly(
    store: Store, tmp_path: Path
) -> None:
    days = sessions(8)
    written = fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=9)
    steps: list[RetentionStep] = []

    report = retire(store, archive, keep(5), steps.append)

    assert report.ok
    for name in RETIRED_TABLES:
        assert store.sessions(name) == days[3:], name
        assert archive.sessions(name) == days[:3], name
        assert report.table(name).archived == tuple(days[:3])
        assert report.table(name).dropped == tuple(days[:3])
        assert report.table(name).kept == tuple(days[3:])
        assert report.table(name).rows == sum(written[name, d].num_rows for d in days[:3])
        for day in days[:3]:
            back = archive.read(
                f"SELECT * FROM {name} WHERE session = %s", [day], TABLES[name].schema
            )
            assert key_order(name, back).equals(key_order(name, written[name, day])), (name, day)
        for day in days[3:]:
            hot = store.export_session(name, day)
            assert key_order(name, hot).equals(key_order(name, written[name, day]))
    # daily bars are never retired
    assert store.count("daily_bars") == sum(written["daily_bars", d].num_rows for d in days)
    daily = store.read("SELECT * FROM daily_bars ORDER BY date, symbol", [], DAILY_BARS.schema)
    expected = pa.concat_tables([written["daily_bars", d] for d in days])
    assert daily.equals(key_order("daily_bars", expected))
    assert not (tmp_path / "archive" / "daily_bars").exists()
    assert archive.sessions("daily_bars") == []
    # progress: a start step, then one per retired session
    assert steps[0].done == 0
    assert [s.done for s in steps[1:]] == list(range(1, 13))
    assert {s.total for s in steps} == {12}
    assert report.archive_bytes["total"] == archive.table_bytes()["total"] > 0
    if isinstance(store, PostgresStore):
        names = partitions(store)
        for name in RETIRED_TABLES:
            for day in days[:3]:
                assert f"{name}_p{day:%Y%m%d}" not in names
            for day in days[3:]:
                assert f"{name}_p{day:%Y%m%d}" in names
        assert report.hot_bytes_after["minute_bars"] < report.hot_bytes_before["minute_bars"]


def test_binary_payloads_and_awkward_doubles_survive_the_trip(store: Store, tmp_path: Path) -> None:
    days = sessions(2)
    written = fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=19)
    retire(store, archive, keep(1))
    events = archive.read(
        "SELECT payload FROM scan_events ORDER BY scan, seq, keyframe",
        [],
        pa.schema([("payload", pa.binary())]),
    )
    expected = key_order("scan_events", written["scan_events", days[0]])
    assert events.column("payload").to_pylist() == expected.column("payload").to_pylist()
    assert b"" in events.column("payload").to_pylist()
    slots = archive.read("SELECT * FROM slot_volume", [], SLOT_VOLUME.schema)
    assert slots.column("volume").to_pylist() == (
        key_order("slot_volume", written["slot_volume", days[0]]).column("volume").to_pylist()
    )
    lows = archive.read(
        "SELECT low FROM minute_bars WHERE low = %s",
        [0.1 + 0.2],
        pa.schema([("low", pa.float64())]),
    )
    assert lows.column("low").to_pylist() == [0.30000000000000004]


def test_running_again_changes_nothing(store: Store, tmp_path: Path) -> None:
    days = sessions(7)
    fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=3)
    retire(store, archive, keep(5))
    files = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (tmp_path / "archive").rglob("*.parquet")
    }
    assert len(files) == 2 * len(RETIRED_TABLES)

    again = retire(store, archive, keep(5))

    assert again.ok
    assert all(t.retired == () for t in again.tables)
    assert {
        p: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (tmp_path / "archive").rglob("*.parquet")
    } == (files)
    for name in RETIRED_TABLES:
        assert store.sessions(name) == days[2:]


def test_a_crash_between_write_and_drop_is_finished_without_rewriting(
    store: Store, tmp_path: Path
) -> None:
    days = sessions(6)
    fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=3)
    # the previous run wrote the file, then died before dropping the session
    path = archive.write("minute_bars", days[0], store.export_session("minute_bars", days[0]))
    identity = (path.stat().st_ino, path.stat().st_mtime_ns)

    report = retire(store, archive, keep(5))

    retired = report.table("minute_bars").retired
    assert [(r.session, r.written, r.merged) for r in retired] == [(days[0], False, True)]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity
    assert store.sessions("minute_bars") == days[1:]
    assert report.table("scan_events").archived == (days[0],)


def test_a_retired_session_that_comes_back_hot_is_merged(store: Store, tmp_path: Path) -> None:
    days = sessions(6)
    written = fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=3)
    retire(store, archive, keep(5))
    old = days[0]
    # late rows for the retired session: one new symbol, and one key already archived with other
    # values (minute bars: the archived row stays, first write wins as in the store)
    late_bars = minute_bars(old, ["ZZZ"], 3, seed=99)
    clash = (
        written["minute_bars", old]
        .slice(0, 1)
        .set_column(6, "close", pa.array([-1.0], pa.float64()))
    )
    store.write("minute_bars", pa.concat_tables([late_bars, clash]))
    # slot volume is last-write-wins: the late profile replaces the archived one
    new_profile = slot_volume(old, ["AAPL"], seed=42)
    store.write("slot_volume", new_profile)

    report = retire(store, archive, keep(5))

    assert report.ok
    bars = report.table("minute_bars").retired
    assert [(r.session, r.written, r.merged, r.hot_rows) for r in bars] == [(old, True, True, 4)]
    assert bars[0].rows == written["minute_bars", old].num_rows + 3
    expected_bars = key_order(
        "minute_bars", pa.concat_tables([written["minute_bars", old], late_bars])
    )
    assert archive.read_session("minute_bars", old).equals(expected_bars)
    slots = archive.read_session("slot_volume", old)
    aapl = slots.filter(pc.equal(slots.column("symbol"), "AAPL"))
    assert aapl.column("volume").to_pylist() == new_profile.column("volume").to_pylist()
    assert slots.num_rows == written["slot_volume", old].num_rows
    for name in RETIRED_TABLES:
        assert old not in store.sessions(name)
    assert archive.rows("minute_bars", old) == expected_bars.num_rows


def test_a_failed_archive_write_keeps_the_session_hot(store: Store, tmp_path: Path) -> None:
    days = sessions(7)
    written = fill(store, days)
    root = tmp_path / "archive"
    root.mkdir()
    (root / "minute_bars").write_text("not a directory: every write of minute bars fails")
    archive = Archive(root, zstd_level=3)

    report = retire(store, archive, keep(5))

    assert not report.ok
    assert [(f.table, f.session) for f in report.failures] == [
        ("minute_bars", days[0]),
        ("minute_bars", days[1]),
    ]
    assert "cannot archive minute_bars 2026-11-02" in report.failures[0].message
    assert store.sessions("minute_bars") == days
    assert report.table("minute_bars").retired == ()
    for day in days[:2]:
        hot = store.export_session("minute_bars", day)
        assert key_order("minute_bars", hot).equals(
            key_order("minute_bars", written["minute_bars", day])
        )
    assert store.sessions("scan_events") == days[2:]  # the other tables carried on

    (root / "minute_bars").unlink()
    fixed = retire(store, archive, keep(5))
    assert fixed.ok
    assert fixed.table("minute_bars").archived == tuple(days[:2])
    assert store.sessions("minute_bars") == days[2:]


def test_a_write_that_raises_keeps_the_session_hot(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = sessions(6)
    fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=3)

    def refuse(name: str, session: dt.date, table: pa.Table) -> Path:
        raise ArchiveError(f"cannot archive {name} {session}: disk full")

    monkeypatch.setattr(archive, "write", refuse)
    report = retire(store, archive, keep(5))
    assert len(report.failures) == len(RETIRED_TABLES)
    for name in RETIRED_TABLES:
        assert store.sessions(name) == days
    assert not (tmp_path / "archive").exists()


def test_rows_written_while_archiving_keep_the_session_hot(store: Store, tmp_path: Path) -> None:
    days = sessions(6)
    written = fill(store, days)
    archive = Archive(tmp_path / "archive", zstd_level=3)
    real_write = archive.write
    late = minute_bars(days[0], ["LATE"], 2, seed=5)

    def write_then_race(name: str, session: dt.date, table: pa.Table) -> Path:
        path = real_write(name, session, table)
        if name == "minute_bars":
            store.write("minute_bars", late)  # the recorder, between export and drop
        return path

    archive.write = write_then_race  # type: ignore[method-assign]
    report = retire(store, archive, keep(5))
    assert [(f.table, f.session) for f in report.failures] == [("minute_bars", days[0])]
    assert "+2 rows were written" in report.failures[0].message
    assert store.sessions("minute_bars") == days

    archive.write = real_write  # type: ignore[method-assign]
    again = retire(store, archive, keep(5))
    assert again.ok
    assert [(r.merged, r.written, r.hot_rows) for r in again.table("minute_bars").retired] == [
        (True, True, written["minute_bars", days[0]].num_rows + late.num_rows)
    ]
    assert store.sessions("minute_bars") == days[1:]
    archived = archive.read_session("minute_bars", days[0])
    assert "LATE" in archived.column("symbol").to_pylist()


def test_hot_size_stays_bounded_while_sessions_come_and_go(store: Store, tmp_path: Path) -> None:
    days = sessions(12)
    archive = Archive(tmp_path / "archive", zstd_level=3)
    settings = keep(5)

    def write_session(day: dt.date) -> None:
        for name, table in session_data(day, seed=1, size=4).items():
            if name != "daily_bars":
                store.write(name, table)

    def hot_bytes() -> int:
        if hasattr(store, "checkpoint"):
            store.checkpoint()
        return store.table_bytes()["total"]

    for day in days[:6]:
        write_session(day)
    retire(store, archive, settings)
    after_six = hot_bytes()
    for day in days[6:]:
        write_session(day)
        retire(store, archive, settings)
    after_twelve = hot_bytes()

    for name in RETIRED_TABLES:
        assert store.sessions(name) == days[7:]
        assert archive.sessions(name) == days[:7]
    assert after_six > 0
    if isinstance(store, PostgresStore):
        assert abs(after_twelve - after_six) <= 0.10 * after_six, (after_six, after_twelve)
    else:  # DuckDB reuses the freed blocks of its file
        assert after_twelve <= 1.5 * after_six, (after_six, after_twelve)


def test_merge_by_key_picks_the_winner_per_key() -> None:
    spec = SLOT_VOLUME
    day = sessions(1)[0]
    archived = slot_volume(day, ["A", "B", "C"], seed=1)
    hot = slot_volume(day, ["B", "D"], seed=2)
    hot_wins = merge_by_key(spec, archived, hot, hot_wins=True)
    archive_wins = merge_by_key(spec, archived, hot, hot_wins=False)
    assert hot_wins.column("symbol").to_pylist() == ["A", "B", "C", "D"]
    by_symbol: dict[str, Any] = dict(
        zip(
            hot_wins.column("symbol").to_pylist(),
            hot_wins.column("volume").to_pylist(),
            strict=True,
        )
    )
    assert by_symbol["B"] == hot.column("volume")[0].as_py()
    assert archive_wins.column("volume")[1].as_py() == archived.column("volume")[1].as_py()
    assert merge_by_key(spec, archived, hot.slice(0, 0), hot_wins=True).equals(archived)
