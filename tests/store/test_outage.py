"""A PostgreSQL outage mid-session loses no row.

Two `tapescan run --feed replay --store postgres` processes replay the same simulated day:
a reference run flat out against the machine's PostgreSQL, and a paced run against a private
server that the test kills hard (``pg_ctl stop -m immediate``) soon after the open and keeps
down for 20 s (five and a half hours of market time). The paced run keeps scanning: its recorder queues, then spills to Parquet, and
writes everything back once the server is up again. Afterwards every table holds exactly the
rows of the reference run, none twice, and the recorder reports no lost row.

Both runs go at once (the reference does not depend on the private server), so the test takes
about a minute, the 20 s outage included.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tapescan.feeds.sim.dataset import DatasetPaths, FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar, ns_to_utc
from tapescan.store.tables import TABLES
from tests.api.server import Server
from tests.services import postgres_url, scratch_schema
from tests.store.private_postgres import PrivatePostgres, private_postgres

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)
SYMBOLS = 250
INTERVAL_S = 5
SPEED = 1000  # the day's 16 hours of market time in ~58 s of wall time
KILL_AT = dt.time(9, 35)  # ET: just after the open, when rows come fastest
OUTAGE_S = 20.0
QUEUE_ROWS = 2_000  # the smallest queue allowed, so the outage really spills
COUNTED = ("minute_bars", "scan_events", "scan_entries", "daily_bars", "slot_volume", "symbols")

Health = dict[str, Any]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    sessions = [*CAL.previous_sessions(DAY, 10), DAY]
    return write_dataset(
        SimMarket(23, SYMBOLS, CAL), tmp_path_factory.mktemp("data"), sessions, FileFormat.PARQUET
    )


@pytest.fixture
def private() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def shared_schema() -> Iterator[tuple[str, str]]:
    url = postgres_url()
    with scratch_schema(url) as schema:
        yield url, schema


def replay_run(
    workdir: Path, dataset: DatasetPaths, speed: str, monkeypatch: pytest.MonkeyPatch, **env: str
) -> Server:
    """A replay of DAY from its pre-open, recording into the PostgreSQL that ``env`` names."""
    workdir.mkdir()
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Server(
            workdir,
            "--feed", "replay",
            "--bars", str(dataset.minute_bars),
            "--daily", str(dataset.daily_bars),
            "--reference", str(dataset.reference),
            "--start", ns_to_utc(CAL.session(DAY).pre_open_ns).isoformat(),
            "--speed", speed,
            "--scan-interval", str(INTERVAL_S),
            "--store", "postgres",
            "--data-dir", str(workdir / "data"),
        )  # fmt: skip


def all_written(health: Health) -> bool:
    store = health["store"]
    return bool(
        health["scans"]["feed_finished"]
        and store["up"]
        and store["queued_rows"] == 0
        and store["spill_files"] == 0
    )


def clock_ns(health: Health) -> int:
    now = dt.datetime.fromisoformat(health["clock"]["now"])
    return int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1_000


def table_figures(url: str, schema: str) -> dict[str, tuple[int, int, str]]:
    """Per table: rows, distinct keys and a fingerprint of the whole content (in key order)."""
    figures = {}
    with psycopg.connect(url, autocommit=True) as connection:
        for name in COUNTED:
            key = sql.SQL(", ").join(sql.Identifier(c) for c in TABLES[name].key)
            row = connection.execute(
                sql.SQL(
                    "SELECT count(*), count(DISTINCT ({key})), "
                    "coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM {table} t"
                ).format(key=key, table=sql.Identifier(schema, name))
            ).fetchone()
            assert row is not None
            figures[name] = (int(row[0]), int(row[1]), str(row[2]))
    return figures


@dataclass(slots=True)
class OutageFigures:
    killed_at: str = ""
    spilled_rows: int = 0
    spill_files_on_disk: int = 0
    spill_bytes_on_disk: int = 0
    reconnect_s: float = 0.0  # from the restart until the recorder is connected again
    write_back_s: float = 0.0  # from the restart until no spill file is left
    restored_rows: int = 0
    queued_peak: int = 0  # most rows held in memory while spill files were written back
    counts: dict[str, int] = field(default_factory=dict)


def spill_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "data" / "spill").glob("*.parquet"))


@pytest.mark.services
@pytest.mark.slow
def test_postgres_outage_mid_session_loses_no_row(
    dataset: DatasetPaths,
    private: PrivatePostgres,
    shared_schema: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared_url, reference_schema = shared_schema
    reference = replay_run(
        tmp_path / "reference",
        dataset,
        "max",
        monkeypatch,
        TAPESCAN_POSTGRES_URL=shared_url,
        TAPESCAN_POSTGRES_SCHEMA=reference_schema,
    )
    outage_dir = tmp_path / "outage"
    outage = replay_run(
        outage_dir,
        dataset,
        str(SPEED),
        monkeypatch,
        TAPESCAN_POSTGRES_URL=private.url(),
        TAPESCAN_POSTGRES_SCHEMA="tapescan",
        TAPESCAN_RECORDER_QUEUE_ROWS=str(QUEUE_ROWS),
    )
    figures = OutageFigures()
    try:
        # Mid-session: the paced run has reached the open and recorded the pre-market.
        kill_ns = et_to_ns(DAY, KILL_AT)
        before = outage.health(lambda h: clock_ns(h) >= kill_ns, timeout_s=120)
        assert not before["scans"]["feed_finished"]
        assert before["store"]["up"]
        assert before["store"]["written_rows"] > 0
        private.stop("immediate")
        killed = time.monotonic()
        figures.killed_at = before["clock"]["now"]

        down = outage.health(lambda h: not h["store"]["up"], timeout_s=OUTAGE_S / 2)
        assert down["store"]["last_error"], down["store"]
        spilling = outage.health(
            lambda h: h["store"]["spilled_rows"] > 0 and bool(spill_files(outage_dir)),
            timeout_s=OUTAGE_S - (time.monotonic() - killed),
        )
        assert not spilling["store"]["up"]

        def outage_over(health: Health) -> bool:
            """The whole outage: the server keeps running, the store stays down."""
            assert not health["store"]["up"], "the store came back while PostgreSQL was down"
            assert health["status"] == "degraded", health  # history is not being recorded
            return time.monotonic() - killed >= OUTAGE_S

        last = outage.health(outage_over, timeout_s=OUTAGE_S + 10)
        assert not last["scans"]["feed_finished"], "the outage did not end mid-session"
        on_disk = spill_files(outage_dir)
        figures.spill_files_on_disk = len(on_disk)
        figures.spill_bytes_on_disk = sum(p.stat().st_size for p in on_disk)
        assert on_disk
        assert last["store"]["spilled_rows"] > QUEUE_ROWS

        private.start()
        restarted = time.monotonic()
        outage.health(lambda h: h["store"]["up"], timeout_s=30)
        figures.reconnect_s = round(time.monotonic() - restarted, 2)

        def written_back(health: Health) -> bool:
            figures.queued_peak = max(figures.queued_peak, health["store"]["queued_rows"])
            return bool(health["store"]["spill_files"] == 0)

        outage.health(written_back, timeout_s=60)
        figures.write_back_s = round(time.monotonic() - restarted, 2)

        done = outage.health(all_written, timeout_s=120)
        assert reference.health(all_written, timeout_s=120)["store"]["spilled_rows"] == 0
        store = done["store"]
        figures.spilled_rows, figures.restored_rows = store["spilled_rows"], store["restored_rows"]
        assert store["lost_rows"] == 0
        assert store["restored_rows"] == store["spilled_rows"]
        assert (done["status"], store["last_error"]) == ("ok", "")  # the outage's error cleared
        assert store["recent_errors"][0]["where"] == "store", store  # kept as history
        assert spill_files(outage_dir) == []

        expected = table_figures(shared_url, reference_schema)
        got = table_figures(private.url(), "tapescan")
        figures.counts = {name: rows for name, (rows, _, _) in got.items()}
        print(f"\noutage figures: {figures}")
        print(f"reference counts: { {name: rows for name, (rows, _, _) in expected.items()} }")
        for name in COUNTED:
            rows, keys, _ = got[name]
            assert rows == keys, f"{name}: {rows - keys} duplicate keys after the outage"
            assert rows > 0, f"{name} recorded nothing"
        assert {n: f[0] for n, f in got.items()} == {n: f[0] for n, f in expected.items()}
        assert got == expected  # the same rows, not only as many
    finally:
        outage.stop()
        reference.stop()
