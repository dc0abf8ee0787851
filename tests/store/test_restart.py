"""A process killed mid-session and restarted continues with the same state for every symbol.

Run 1 replays a day from 10:55 ET at 30x and is killed (SIGKILL: nothing flushed on the way out)
once its clock passes 11:00. Run 2 starts on the same data directory at 11:00: warm-up history
and today's minute bars come from the store, the feed resumes after the last stored minute, and
every column of every symbol (volume, HOD/LOD, VWAP, RVOL, the 1/5/15-minute changes) equals a
replay of the files up to that instant.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.replay.feed import ReplayFeed
from tapescan.feeds.sim.dataset import DatasetPaths, FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import datetime_to_ns, et_to_ns, market_calendar, ns_to_utc
from tapescan.replay_until import replay_report
from tests.api.server import Server

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    sessions = [*CAL.previous_sessions(DAY, 10), DAY]
    return write_dataset(
        SimMarket(12, 250, CAL), tmp_path_factory.mktemp("data"), sessions, FileFormat.PARQUET
    )


def run(dataset: DatasetPaths, workdir: Path, start: dt.time, speed: str) -> Server:
    return Server(
        workdir,
        "--feed", "replay",
        "--bars", str(dataset.minute_bars),
        "--daily", str(dataset.daily_bars),
        "--reference", str(dataset.reference),
        "--start", ns_to_utc(et_to_ns(DAY, start)).isoformat(),
        "--speed", speed,
        "--data-dir", str(workdir / "data"),
    )  # fmt: skip


def test_a_restart_at_11_continues_with_equal_state(dataset: DatasetPaths, tmp_path: Path) -> None:
    eleven = et_to_ns(DAY, dt.time(11, 0))
    first = run(dataset, tmp_path, dt.time(10, 55), "30")
    try:
        first.health(
            lambda h: (
                h["scans"]["warmed_up"]
                and datetime_to_ns(dt.datetime.fromisoformat(h["clock"]["now"])) >= eleven
                and h["store"]["written_rows"] > 0
            ),
            timeout_s=180,
        )
        first.process.kill()  # no shutdown, no flush
    finally:
        first.stop()

    second = run(dataset, tmp_path, dt.time(11, 0), "1")
    try:
        health = second.health(
            lambda h: (
                h["scans"]["warmed_up"]
                and h["feed"]["last_event"] is not None
                and datetime_to_ns(dt.datetime.fromisoformat(h["feed"]["last_event"])) >= eleven
            ),
            timeout_s=180,
        )
        assert health["store"]["warmup_source"] == "store"
        assert health["store"]["recovered_bars"] > 0
        symbols = pq.read_table(dataset.reference).column("symbol").to_pylist()
        values: dict[str, dict[str, Any]] = {}
        asof = set()
        for symbol in symbols:
            body = httpx.get(f"{second.url}/api/v1/symbols/{symbol}", timeout=10).json()
            values[symbol] = body["values"]
            asof.add(body["asof"])
        # Nothing moves until the 11:00 bar ends a minute from now: one instant for all.
        assert len(asof) == 1
        at_ns = datetime_to_ns(dt.datetime.fromisoformat(asof.pop()))
        assert at_ns == eleven
        fed = httpx.get(f"{second.url}/api/v1/health", timeout=10).json()["feed"]["aggregates"]
        bars = pq.read_table(dataset.minute_bars)
        today = bars.filter(
            pc.greater_equal(bars.column("ts"), ns_to_utc(CAL.session(DAY).pre_open_ns))
        )
        assert fed < today.num_rows / 4  # today so far came from the store, not the feed
        sample = symbols[0]
        stored = httpx.get(
            f"{second.url}/api/v1/symbols/{sample}/bars",
            params={"interval": "1m", "limit": 1000},
            timeout=10,
        ).json()["bars"]
        ended = today.filter(
            pc.and_(
                pc.equal(today.column("symbol"), sample),
                pc.less(today.column("ts"), ns_to_utc(eleven - 60_000_000_000)),
            )
        )
        # every minute once: the killed run's rows were kept, none written twice
        assert [b["t"] for b in stored][: ended.num_rows] == [
            t.isoformat() for t in ended.column("ts").to_pylist()
        ]
    finally:
        second.stop()

    feed = ReplayFeed.open(dataset.minute_bars, dataset.daily_bars, dataset.reference, CAL)
    expected = asyncio.run(replay_report(feed, CAL, at_ns, [], symbols=symbols))["symbols"]
    traded = 0
    for symbol in symbols:
        # every column, the 1/5/15-minute changes included (wrong after a restart before)
        assert values[symbol] == expected[symbol], symbol
        traded += values[symbol]["volume"] > 0
    assert traded > len(symbols) / 2
    assert sum(v["rvol"] is not None for v in values.values()) > len(symbols) / 4
