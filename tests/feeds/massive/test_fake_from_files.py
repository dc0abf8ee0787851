"""`tapescan fake-massive --bars --daily --reference` serves recorded files as Massive would: the
node on it warms up from their daily bars and minute bars, takes today's bars before its start
from REST and the rest from the socket, and records every minute bar of the files, once.

Real processes on 127.0.0.1: the fake at 60x from 09:50 ET on the files' last session, the node
started at the fake's clock and stopped after the files' 10:05 ET bars have come.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.sim.dataset import DatasetPaths, FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import datetime_to_ns, et_to_ns, market_calendar, ns_to_utc
from tapescan.store.duck import DuckDbStore
from tapescan.store.open import DUCKDB_FILE
from tapescan.store.tables import MINUTE_BARS
from tests.api.server import Server
from tests.feeds.massive.fake_process import FakeProcess

pytestmark = pytest.mark.slow
CAL = market_calendar()
DAY = dt.date(2026, 11, 24)
SPEED = "60"
UNTIL = et_to_ns(DAY, dt.time(10, 5))  # the files' bars up to this instant are compared


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    sessions = [*CAL.previous_sessions(DAY, 10), DAY]
    return write_dataset(
        SimMarket(21, 60, CAL), tmp_path_factory.mktemp("files"), sessions, FileFormat.PARQUET
    )


def test_a_run_on_the_fake_served_from_files_records_their_bars_once(
    dataset: DatasetPaths, tmp_path: Path
) -> None:
    start = ns_to_utc(et_to_ns(DAY, dt.time(9, 50))).isoformat()
    fake = FakeProcess(
        tmp_path,
        "--bars", str(dataset.minute_bars),
        "--daily", str(dataset.daily_bars),
        "--reference", str(dataset.reference),
        "--start", start,
        "--speed", SPEED,
    )  # fmt: skip
    try:
        run = Server(
            tmp_path,
            "--feed", "massive",
            "--start", fake.now(),
            "--speed", SPEED,
            "--data-dir", str(tmp_path / "data"),
            env=fake.env(),
        )  # fmt: skip
        try:
            health = run.health(
                lambda h: (
                    h["scans"]["warmed_up"]
                    and h["feed"]["last_event"] is not None
                    and datetime_to_ns(dt.datetime.fromisoformat(h["feed"]["last_event"]))
                    > UNTIL + 60 * 10**9
                ),
                timeout_s=120,
            )
            connection = health["feed"]["connection"]
            assert connection["socket"]["state"] == "live"
            assert connection["backfill"]["last"]["reason"] == "start"
            assert connection["backfill"]["last"]["error"] is None
            by_endpoint = connection["rest"]["by_endpoint"]
            backfill = connection["backfill"]
            # the RVOL baseline's 10 sessions, and each gap's tickers (its snapshot apart)
            assert (
                by_endpoint["/v2/aggs/ticker"] == 10 * 60 + backfill["requests"] - backfill["gaps"]
            )
            assert by_endpoint["/v2/snapshot"] == backfill["gaps"]
            daily = pq.read_table(dataset.daily_bars)
            before = daily.filter(pc.equal(daily.column("date"), CAL.previous_sessions(DAY, 1)[0]))
            for symbol, close in list(
                zip(
                    before.column("symbol").to_pylist(),
                    before.column("close").to_pylist(),
                    strict=True,
                )
            )[:10]:
                values = httpx.get(f"{run.url}/api/v1/symbols/{symbol}").json()["values"]
                assert values["prev_close"] == pytest.approx(close)
                assert values["rvol"] is not None or values["volume"] == 0
        finally:
            run.stop()
    finally:
        fake.stop()

    store = DuckDbStore(tmp_path / "data" / DUCKDB_FILE)
    try:
        recorded = store.read(
            "SELECT * FROM minute_bars WHERE session = %s AND ts < %s",
            [DAY, ns_to_utc(UNTIL)],
            MINUTE_BARS.schema,
        )
    finally:
        store.close()
    files = pq.read_table(dataset.minute_bars)
    expected = files.filter(
        pc.and_(
            pc.greater_equal(files.column("ts"), ns_to_utc(CAL.session(DAY).pre_open_ns)),
            pc.less(files.column("ts"), ns_to_utc(UNTIL)),
        )
    )
    assert expected.num_rows > 1_000

    def keyed(table: pa.Table) -> list[tuple[object, ...]]:
        columns = ("symbol", "ts", "open", "high", "low", "close", "volume")
        rows = zip(*(table.column(c).to_pylist() for c in columns), strict=True)
        return sorted((s, t.timestamp(), *rest) for s, t, *rest in rows)

    assert keyed(recorded) == keyed(expected)  # every bar once, as in the files
