import datetime as dt
from pathlib import Path

from tapescan.config import Settings
from tapescan.market.calendar import market_calendar
from tapescan.ops.storage_bench import bench_storage
from tests.services import postgres_url

RECORDED = {"minute_bars", "daily_bars", "slot_volume", "scan_events", "scan_entries", "symbols"}
RETIRING = {"minute_bars", "slot_volume", "scan_events", "scan_entries"}


def test_storage_bench_reports_hot_and_archived_bytes_and_a_bounded_hot_size(
    tmp_path: Path,
) -> None:
    url = postgres_url()
    settings = Settings(
        retention_minute_sessions=1, retention_event_sessions=1, retention_slot_sessions=2
    )
    messages: list[str] = []
    report = bench_storage(
        30,
        3,
        dt.date(2026, 11, 24),
        market_calendar(),
        url,
        3,
        messages.append,
        start=dt.time(9, 25),
        end=dt.time(9, 40),
        settings=settings,
        show_bar=False,
        workdir=tmp_path,
    )

    assert report["benchmark"] == "storage"
    assert {"cpu", "cores", "python"} <= set(report["machine"])
    assert report["inputs"]["symbols"] == 30
    assert report["inputs"]["sessions"] == 3
    assert report["recording"]["cycles"] == 15 * 60 + 1
    assert report["recording"]["keyframes"] > 0

    for backend in ("duckdb", "postgres"):
        rows = report["rows"][backend]
        assert set(rows) == RECORDED
        assert all(n > 0 for n in rows.values()), rows
    assert report["rows"]["duckdb"]["minute_bars"] == report["rows"]["postgres"]["minute_bars"]

    duck = report["hot_one_session"]["duckdb"]
    assert duck["file_bytes"] >= duck["used_bytes"] > 0
    pg = report["hot_one_session"]["postgres"]
    assert set(pg["tables_bytes"]) == RECORDED
    assert all(size > 0 for size in pg["tables_bytes"].values())
    assert pg["used_bytes"] == sum(pg["tables_bytes"].values())

    archive = report["archive_one_session"]
    assert set(archive["tables_bytes"]) == RETIRING
    assert all(size > 0 for size in archive["tables_bytes"].values())
    assert archive["total_bytes"] == sum(archive["tables_bytes"].values())
    # the simulated day is on the tick grid: both big tables go in their compact layouts
    assert archive["layouts"]["minute_bars"] == "minute-bars-ticks-1"
    assert archive["layouts"]["scan_events"] == "scan-events-values-1"
    plain = archive["plain_layout"]["tables_mb"]
    assert set(plain) == {"minute_bars", "scan_events"}
    assert archive["plain_layout"]["total_bytes"] > archive["total_bytes"]
    assert report["target"]["archive_met"] is True

    bounded = report["bounded"]
    assert [s["session"] for s in bounded["after_each_session"]] == [1, 2, 3]
    last = bounded["after_each_session"][-1]["retired"]
    assert last["minute_bars"]
    assert last["scan_events"]
    assert last["slot_volume"]
    assert bounded["compared"] == [1, 3]
    for key in ("duckdb_used_bytes", "postgres_bytes"):
        # Three sessions written; unbounded would be ~3x the first.
        assert 0 < bounded["hot_after_last"][key] < 1.5 * bounded["hot_after_middle"][key]
    archived = bounded["archive_bytes_after_last"]["postgres"]
    assert archived["minute_bars"] > 0
    assert archived["total"] > 0
    assert (tmp_path / "store.duckdb").exists()
    assert any("session 3/3" in m for m in messages)


def test_one_session_measures_hot_and_archived_bytes_without_the_boundedness_check(
    tmp_path: Path,
) -> None:
    messages: list[str] = []
    report = bench_storage(
        20,
        4,
        dt.date(2026, 11, 24),
        market_calendar(),
        postgres_url(),
        1,
        messages.append,
        start=dt.time(9, 30),
        end=dt.time(9, 35),
        show_bar=False,
        workdir=tmp_path,
    )
    assert report["bounded"] is None
    assert report["target"]["hot_within_10_percent_after_middle_vs_last"] is None
    assert report["archive_one_session"]["total_bytes"] > 0
    assert not any(m.startswith("session ") for m in messages)  # nothing re-labelled
