"""A really full disk: the recorder goes on, holds a bounded number of rows, counts what it has to
drop, says why (the disk, not the database's follow-up error), and writes again by itself once
space returns.

The disk is a small tmpfs mounted for the test (root, or CAP_SYS_ADMIN, is needed; without it
the tests are skipped and say so), filled to the last byte with a filler file, then freed.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tapescan.store import recorder as recorder_module
from tapescan.store.duck import DuckDbStore
from tapescan.store.recorder import Recorder, RecorderLimits
from tests.api.server import Server
from tests.store.test_recorder import FlakyStore, until

ENOSPC = "No space left on device"
SESSION = dt.date(2026, 11, 24)
OPEN = dt.datetime(2026, 11, 24, 14, 30, tzinfo=dt.UTC)
SYMBOLS = 1000


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "RETRY_S", (0.01, 0.02, 0.05, 0.05))


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def mount_small_disk(path: Path, size_bytes: int) -> str:
    """Mount a filesystem of ``size_bytes`` at ``path``; '' when done, else why it could not."""
    path.mkdir(parents=True, exist_ok=True)
    tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path))
    if tmpfs.returncode == 0:
        return ""
    image = path.with_suffix(".img")  # no tmpfs: an ext4 image on a loop device
    with image.open("wb") as file:
        file.truncate(max(size_bytes, 2 * 1024**2))
    made = _run("mkfs.ext4", "-q", "-m", "0", str(image))
    loop = _run("mount", "-o", "loop", str(image), str(path)) if made.returncode == 0 else made
    if loop.returncode == 0:
        return ""
    return (
        f"cannot mount a small filesystem (needs root or CAP_SYS_ADMIN): "
        f"tmpfs: {tmpfs.stderr.strip()}; loop: {loop.stderr.strip()}"
    )


@pytest.fixture
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A mounted filesystem of the size the test parametrizes (default 8 MiB)."""
    size = int(getattr(request, "param", 8 * 1024**2))
    disk = tmp_path / "disk"
    reason = mount_small_disk(disk, size)
    if reason:
        pytest.skip(reason)
    try:
        yield disk
    finally:
        if _run("umount", str(disk)).returncode != 0:
            _run("umount", "-l", str(disk))  # still held open: detach now, freed when closed


def _write_until_it_fails(file: BinaryIO, data: bytes) -> None:
    while True:
        file.write(data)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has not one byte left; returns it (delete to free)."""
    filler = disk / "filler"
    chunk = b"\xa5" * 65536
    with filler.open("wb", buffering=0) as file:
        for size in (65536, 4096, 512, 1):
            with pytest.raises(OSError, match=ENOSPC):
                _write_until_it_fails(file, chunk[:size])
    return filler


def bars(first: int, count: int) -> pa.Table:
    """Minute bars ``first`` to ``first + count``: unique keys, random prices (incompressible)."""
    index = np.arange(first, first + count)
    rng = np.random.default_rng(first)
    prices = {name: rng.random(count) * 100 for name in ("open", "high", "low", "close", "vwap")}
    return pa.table(
        {
            "session": pa.array([SESSION] * count, pa.date32()),
            "symbol": [f"S{i % SYMBOLS:04d}" for i in index],
            "ts": pa.array(
                [OPEN + dt.timedelta(minutes=int(i) // SYMBOLS) for i in index],
                pa.timestamp("us", tz="UTC"),
            ),
            **prices,
            "volume": rng.integers(0, 1 << 40, count),
            "trades": rng.integers(0, 1 << 30, count),
        }
    )


def errors_logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage())


def test_duckdb_on_a_full_disk_keeps_the_recorder_going_and_resumes_when_space_returns(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue_rows, batch = 5_000, 1_000
    store = DuckDbStore(small_disk / "tapescan.duckdb")
    store.migrate()
    recorder = Recorder(store, small_disk / "spill", RecorderLimits(queue_rows, flush_s=0.05))
    recorder.start()
    stats = recorder.stats
    try:
        recorder.put("minute_bars", bars(0, 2_000))
        assert recorder.flush(10)
        filler = fill(small_disk)
        with pytest.raises(duckdb.Error, match=ENOSPC):  # as retention's checkpoint would
            store.checkpoint()  # DuckDB now refuses every call until it is opened again

        put, peak = 2_000, 0
        for _ in range(40):  # 50,000 rows a second: four times a full universe's open
            recorder.put("minute_bars", bars(put, batch))
            put += batch
            peak = max(peak, stats.queued_rows)
            time.sleep(0.02)
        until(lambda: stats.written_rows + stats.lost_rows + stats.queued_rows == put, 20)
        until(lambda: stats.failures >= 5, 20)  # it went on trying
        assert recorder._thread is not None
        assert recorder._thread.is_alive()
        assert not stats.store_up
        assert peak <= 2 * queue_rows, f"{peak} rows held in memory on a full disk"
        # what the last puts added is over the bound until the writer's next pass drops it
        until(lambda: stats.queued_rows <= queue_rows, 20)
        assert stats.lost_rows >= put - 2_000 - 2 * queue_rows
        assert ENOSPC in stats.last_error, stats.last_error
        assert "cannot rollback" not in stats.last_error
        assert "invalidated" not in stats.last_error
        assert stats.last_error_at is not None
        assert errors_logged(caplog, ENOSPC) <= 2  # once for the store, once for the spill

        filler.unlink()
        until(lambda: stats.store_up and stats.last_error == "", 20)
        recorder.put("minute_bars", bars(put, batch))
        put += batch
        assert recorder.flush(10)
        assert recorder._thread.is_alive()
        assert stats.last_error == ""
        assert stats.last_error_at is None
        assert any(ENOSPC in r.error for r in stats.recent_errors), stats.recent_errors
        assert stats.queued_rows == 0
        assert stats.written_rows + stats.lost_rows == put
        assert store.count("minute_bars") == stats.written_rows  # each row once
        first = store.read(
            "SELECT count(*) AS n FROM minute_bars WHERE ts < %s",
            [OPEN + dt.timedelta(minutes=2)],
            pa.schema([("n", pa.int64())]),
        )
        assert first.column("n")[0].as_py() == 2_000  # committed before the disk filled
    finally:
        recorder.stop(timeout_s=5)
        store.close()


@pytest.mark.parametrize("small_disk", [1024**2], indirect=True, ids=["1MiB"])
def test_a_full_spill_directory_while_the_store_is_down_drops_the_oldest_rows_counted(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue_rows, batch = 2_000, 500
    store = FlakyStore()
    store.up = False
    spill = small_disk / "spill"
    recorder = Recorder(store, spill, RecorderLimits(queue_rows, flush_s=0.05))
    recorder.start()
    stats = recorder.stats
    try:
        put = 0
        for _ in range(8):  # spilled while there is room
            recorder.put("minute_bars", bars(put, batch))
            put += batch
        until(lambda: stats.spilled_rows + stats.queued_rows == put and stats.spill_files > 0)
        spilled_before = stats.spilled_rows
        assert not stats.store_up
        assert "flaky store is down" in stats.last_error

        filler = fill(small_disk)
        peak = 0
        for _ in range(40):
            recorder.put("minute_bars", bars(put, batch))
            put += batch
            peak = max(peak, stats.queued_rows)
            time.sleep(0.01)
        until(lambda: stats.spilled_rows + stats.lost_rows + stats.queued_rows == put, 20)
        until(lambda: ENOSPC in stats.last_error, 10)
        assert recorder._thread is not None
        assert recorder._thread.is_alive()
        assert peak <= 2 * queue_rows, f"{peak} rows held in memory with the spill disk full"
        assert stats.queued_rows <= queue_rows
        assert stats.lost_rows > 0
        spill_error = stats.last_error.split("spill: ", 1)[-1]
        assert spill_error.startswith("[Errno 28]"), stats.last_error
        assert ENOSPC in spill_error
        assert "store: " in stats.last_error  # and why it spills at all
        assert not list(spill.glob("*.tmp")), "a half-written spill file was left behind"
        assert errors_logged(caplog, ENOSPC) == 1

        filler.unlink()  # space returns, the store is still down: spilling resumes
        while stats.spilled_rows == spilled_before:  # rows go on arriving, as in a session
            assert put < 100_000, "spilling did not resume"
            recorder.put("minute_bars", bars(put, batch))
            put += batch
            time.sleep(0.01)
        until(
            lambda: (
                stats.spilled_rows + stats.lost_rows + stats.queued_rows == put
                and "spill" not in stats.last_error
            )
        )
        assert "store: " in stats.last_error

        store.up = True  # and now the store: every spilled file is written back
        assert recorder.flush(10)
        assert stats.last_error == ""
        assert (stats.spill_files, stats.spill_bytes, stats.queued_rows) == (0, 0, 0)
        assert stats.restored_rows == stats.spilled_rows
        assert not list(spill.iterdir())
        written = pa.concat_tables(store.written["minute_bars"])
        assert written.num_rows == put - stats.lost_rows
        # what is lost is the oldest of what was held when the disk was full, and nothing else
        index = [
            (ts - OPEN) // dt.timedelta(minutes=1) * SYMBOLS + int(symbol[1:])
            for symbol, ts in zip(
                written.column("symbol").to_pylist(), written.column("ts").to_pylist(), strict=True
            )
        ]
        assert len(set(index)) == len(index)  # each row once
        missing = sorted(set(range(put)) - set(index))
        assert len(missing) == stats.lost_rows
        assert missing[0] >= spilled_before
        assert missing == list(range(missing[0], missing[0] + len(missing)))
    finally:
        recorder.stop(timeout_s=5)


def test_a_spill_file_that_cannot_be_read_is_set_aside_not_retried_forever(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    pq.write_table(bars(0, 10), spill / "000000000000-minute_bars.parquet")
    (spill / "000000000001-minute_bars.parquet").write_bytes(b"not parquet")
    pq.write_table(bars(10, 10), spill / "000000000002-minute_bars.parquet")
    (spill / "000000000003-minute_bars.tmp").write_bytes(b"cut short")
    store = FlakyStore()
    recorder = Recorder(store, spill, RecorderLimits(100, flush_s=0.05))
    assert not list(spill.glob("*.tmp"))
    recorder.start()
    try:
        assert recorder.flush(5)
        assert pa.concat_tables(store.written["minute_bars"]).num_rows == 20
        assert [p.name for p in spill.iterdir()] == ["000000000001-minute_bars.bad"]
        assert recorder.stats.spill_files == 0
        assert recorder.stats.failures == 1
        assert recorder.stats.recent_errors[0].where == "spill"
        assert recorder.stats.last_error == ""  # written back since: nothing fails now
    finally:
        recorder.stop(timeout_s=5)


@pytest.mark.parametrize("small_disk", [16 * 1024**2], indirect=True, ids=["16MiB"])
def test_run_on_a_data_dir_that_fills_up_says_why_and_records_again_when_space_returns(
    small_disk: Path, tmp_path: Path
) -> None:
    """`tapescan run --data-dir` on a small disk: health degraded with the disk as the cause,
    then ok again (and no stale error) once space is freed, the process up throughout."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    server = Server(
        workdir,
        "--symbols", "300",
        "--data-dir", str(small_disk),
        "--start", "2026-11-24T09:45:00-05:00",
        "--speed", "10",
    )  # fmt: skip
    try:
        before = server.health(
            lambda h: h["scans"]["warmed_up"] and h["store"]["written_rows"] > 0, timeout_s=120
        )
        assert before["status"] == "ok"
        filler = fill(small_disk)
        full = server.health(lambda h: ENOSPC in h["store"]["last_error"], timeout_s=30)
        assert full["status"] == "degraded"
        assert not full["store"]["up"]
        assert "cannot rollback" not in full["store"]["last_error"]
        assert full["store"]["last_error_at"] is not None

        filler.unlink()
        written = full["store"]["written_rows"]
        again = server.health(
            lambda h: h["status"] == "ok" and h["store"]["written_rows"] > written, timeout_s=30
        )
        store = again["store"]
        assert store["up"]
        assert (store["last_error"], store["last_error_at"]) == ("", None)
        assert ENOSPC in store["recent_errors"][0]["error"]
        assert store["failures"] >= 1
        assert store["lost_rows"] == 0  # the queue held the rows the full disk refused
    finally:
        server.stop()
