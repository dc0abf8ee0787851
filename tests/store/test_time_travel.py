"""Time travel: results?at=T equals `tapescan replay --until T` over the same data.

A real `tapescan run --feed replay --speed max` records one simulated session into its store;
then, for many instants of that day (between, on and across keyframes), the scan rebuilt from
history must equal the replay of the files up to that instant, for every built-in scan. The same
holds after the session has been retired to the Parquet archive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.config import load_settings
from tapescan.feeds.replay.feed import ReplayFeed
from tapescan.feeds.sim.dataset import DatasetPaths, FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar, ns_to_utc
from tapescan.replay_until import replay_report
from tapescan.scan.library import builtin_scans
from tapescan.store import bar_codec, event_codec
from tapescan.store.archive import Archive
from tapescan.store.duck import DuckDbStore
from tapescan.store.history import History
from tapescan.store.open import DUCKDB_FILE
from tapescan.store.retention import retire
from tests.api.server import Server
from tests.store.test_contract import minute_bars

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)
INTERVAL_S = 5
KEYFRAME_MINUTES = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    sessions = [*CAL.previous_sessions(DAY, 10), DAY]
    return write_dataset(
        SimMarket(11, 300, CAL), tmp_path_factory.mktemp("data"), sessions, FileFormat.PARQUET
    )


@pytest.fixture(scope="module")
def recorded(dataset: DatasetPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that replayed DAY flat out and recorded it, still serving."""
    workdir = tmp_path_factory.mktemp("run")
    server = Server(
        workdir,
        "--feed", "replay",
        "--bars", str(dataset.minute_bars),
        "--daily", str(dataset.daily_bars),
        "--reference", str(dataset.reference),
        "--start", ns_to_utc(CAL.session(DAY).pre_open_ns).isoformat(),
        "--speed", "max",
        "--scan-interval", str(INTERVAL_S),
        "--data-dir", str(workdir / "data"),
    )  # fmt: skip
    try:
        server.health(
            lambda h: h["scans"]["feed_finished"] and h["store"]["queued_rows"] == 0,
            timeout_s=400,
        )
        yield server
    finally:
        server.stop()


def replayed(dataset: DatasetPaths, at_ns: int) -> dict[str, Any]:
    feed = ReplayFeed.open(dataset.minute_bars, dataset.daily_bars, dataset.reference, CAL)
    grid = INTERVAL_S * 1_000_000_000
    report: dict[str, Any] = asyncio.run(
        replay_report(feed, CAL, at_ns - at_ns % grid, builtin_scans(), symbols=[])
    )
    return report


def instants() -> list[int]:
    """Instants across the day: random ones, on keyframes and just either side of them."""
    rng = random.Random(5)
    start, end = et_to_ns(DAY, dt.time(4, 1)), et_to_ns(DAY, dt.time(19, 59))
    chosen = [rng.randrange(start, end) for _ in range(10)]
    for hhmm in ((9, 30), (10, 15), (15, 55)):
        keyframe = et_to_ns(DAY, dt.time(*hhmm))
        chosen += [keyframe - 1, keyframe, keyframe + 2_500_000_000]
    return sorted(chosen)


def rows_at(server: Server, scan: str, at_ns: int) -> list[list[Any]] | None:
    at = ns_to_utc(at_ns).isoformat()
    response = httpx.get(
        f"{server.url}/api/v1/scans/{scan}/results", params={"at": at, "limit": 1000}, timeout=30
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def test_results_at_equal_replay_until(recorded: Server, dataset: DatasetPaths) -> None:
    compared = nonempty = 0
    for at_ns in instants():
        expected = replayed(dataset, at_ns)["scans"]
        for scan, report in expected.items():
            got = rows_at(recorded, scan, at_ns)
            assert got is not None, f"{scan} has no history at {ns_to_utc(at_ns)}"
            assert got == [list(r) for r in report["rows"]], f"{scan} at {ns_to_utc(at_ns)}"
            compared += 1
            nonempty += bool(got)
    assert compared == len(instants()) * len(builtin_scans())
    assert nonempty > compared / 4  # the comparison is not between empty tables


def test_results_at_pages_and_errors(recorded: Server) -> None:
    at = ns_to_utc(et_to_ns(DAY, dt.time(10, 30))).isoformat()
    url = f"{recorded.url}/api/v1/scans/high_volume/results"
    whole = httpx.get(url, params={"at": at, "limit": 1000}).json()
    assert len(whole["rows"]) > 3
    first = httpx.get(url, params={"at": at, "limit": 2}).json()
    second = httpx.get(url, params={"at": at, "limit": 2, "cursor": first["next_cursor"]}).json()
    assert first["rows"] + second["rows"] == whole["rows"][:4]
    before = httpx.get(url, params={"at": "2020-01-02T15:00:00Z"})
    assert before.status_code == 404
    assert "recorded from" in before.json()["message"]


def test_events_list_entries_and_exits_in_pages(recorded: Server) -> None:
    url = f"{recorded.url}/api/v1/scans/top_gainers/events"
    window = {
        "from": ns_to_utc(et_to_ns(DAY, dt.time(9, 30))).isoformat(),
        "to": ns_to_utc(et_to_ns(DAY, dt.time(12, 0))).isoformat(),
    }
    events: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {**window, "limit": 20}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(url, params=params).json()
        assert len(page["events"]) <= 20
        events += page["events"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages > 1
    assert {e["event"] for e in events} == {"enter", "exit"}
    keys = [(e["time"], e["seq"], e["symbol"]) for e in events]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    # Membership rebuilt from the events equals the scan's members at the end of the window
    # (which is exclusive: the cycle at 12:00:00 is not in it).
    end_rows = httpx.get(
        f"{recorded.url}/api/v1/scans/top_gainers/results",
        params={"at": ns_to_utc(et_to_ns(DAY, dt.time(12, 0)) - 1).isoformat(), "limit": 1000},
    ).json()["rows"]
    start_rows = httpx.get(
        f"{recorded.url}/api/v1/scans/top_gainers/results",
        params={"at": ns_to_utc(et_to_ns(DAY, dt.time(9, 30)) - 1).isoformat(), "limit": 1000},
    ).json()["rows"]
    members = {r[0] for r in start_rows}
    for event in events:
        if event["event"] == "enter":
            members.add(event["symbol"])
        else:
            members.discard(event["symbol"])
    assert members == {r[0] for r in end_rows}


def test_bars_are_paginated_and_match_the_files(recorded: Server, dataset: DatasetPaths) -> None:
    files = pq.read_table(dataset.minute_bars)
    symbol = files.column("symbol")[0].as_py()
    mine = files.filter(pc.equal(files.column("symbol"), symbol))
    day_start = ns_to_utc(CAL.session(DAY).pre_open_ns)
    mine = mine.filter(pc.greater_equal(mine.column("ts"), pa.scalar(day_start)))
    bars: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {
            "interval": "1m",
            "from": day_start.isoformat(),
            "to": (day_start + dt.timedelta(hours=16)).isoformat(),
            "limit": 1000,
        }
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{recorded.url}/api/v1/symbols/{symbol}/bars", params=params).json()
        assert len(page["bars"]) <= 1000
        bars += page["bars"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [b["close"] for b in bars] == mine.column("close").to_pylist()
    assert [b["volume"] for b in bars] == mine.column("volume").to_pylist()
    daily = httpx.get(
        f"{recorded.url}/api/v1/symbols/{symbol}/bars", params={"interval": "1d", "limit": 5}
    ).json()
    assert len(daily["bars"]) == 5
    assert daily["next_cursor"] is not None
    # The replayed day's own daily bar, recorded at 20:00 ET, equals the one in the files.
    recorded_day = httpx.get(
        f"{recorded.url}/api/v1/symbols/{symbol}/bars",
        params={"interval": "1d", "from": DAY.isoformat()},
    ).json()["bars"]
    files_daily = pq.read_table(dataset.daily_bars).to_pylist()
    expected_day = next(r for r in files_daily if r["symbol"] == symbol and r["date"] == DAY)
    assert recorded_day == [
        {
            "date": DAY.isoformat(),
            **{k: expected_day[k] for k in ("open", "high", "low", "close", "volume")},
        }
    ]


def test_time_travel_from_the_archive(recorded: Server, dataset: DatasetPaths) -> None:
    """Retire DAY to Parquet (a later session arrives), then rebuild from the archive alone."""
    recorded.stop()
    data = Path(recorded.process.args[recorded.process.args.index("--data-dir") + 1])  # type: ignore[union-attr,index,arg-type]
    store = DuckDbStore(data / DUCKDB_FILE)
    later = CAL.next_session(DAY)
    store.write(
        "scan_events",
        pa.table(
            {
                "session": pa.array([later], pa.date32()),
                "scan": ["most_active"],
                "seq": [1],
                "asof_ns": [CAL.session(later).pre_open_ns],
                "keyframe": [True],
                "payload": pa.array([b"\x92\x90\x90"], pa.binary()),
            }
        ),
    )
    store.write("minute_bars", minute_bars(later, ["ZZZ"], 1))
    settings = load_settings(
        {"data_dir": data, "retention_event_sessions": 1, "retention_minute_sessions": 1}
    )
    archive = Archive(settings.archive_path, settings.archive_zstd_level)
    retire(store, archive, settings)
    assert DAY not in store.sessions("scan_events")
    assert DAY in archive.sessions("scan_events")
    # the recorded day is archived in the compact layouts, so this reads through them
    assert archive.layout("scan_events", DAY) == event_codec.LAYOUT
    assert archive.layout("minute_bars", DAY) == bar_codec.LAYOUT
    history = History(store, archive)
    for at_ns in instants()[::3]:
        expected = replayed(dataset, at_ns)["scans"]
        for scan, report in expected.items():
            snapshot = history.scan_at(scan, DAY, at_ns)
            assert snapshot is not None
            assert [list(r) for r in snapshot.rows] == [list(r) for r in report["rows"]], scan
    # minute bars come back from the compact file exactly as recorded from the files
    files = pq.read_table(dataset.minute_bars)
    symbol = files.column("symbol")[0].as_py()
    start = ns_to_utc(CAL.session(DAY).pre_open_ns)
    page = history.minute_bars(symbol, start, start + dt.timedelta(hours=16), None, 1000)
    assert DAY not in store.sessions("minute_bars")
    mine = files.filter(pc.equal(files.column("symbol"), symbol))
    mine = mine.filter(pc.greater_equal(mine.column("ts"), pa.scalar(start)))
    assert page.rows.num_rows == mine.num_rows > 100
    for column in ("open", "high", "low", "close", "volume", "vwap", "trades"):
        assert page.rows.column(column).to_pylist() == mine.column(column).to_pylist(), column
    store.close()
