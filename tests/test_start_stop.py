"""Starting fails fast and cleanly: a taken port, a warm-up that cannot complete."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import time
from pathlib import Path

import pyarrow as pa

from tapescan.config import load_settings
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.store.open import open_store
from tapescan.store.tables import DAILY_BARS, SLOT_VOLUME
from tests.api.server import free_port
from tests.test_cli import tapescan

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)


def finish(process: subprocess.Popen[str], timeout_s: float) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"still running after {timeout_s} s:\n{stderr}") from None
    return process.returncode, stderr, time.monotonic() - started


def test_a_taken_port_is_one_line_and_an_exit_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = tapescan("run", "--symbols", "50", "--port", str(port), cwd=tmp_path)
        code, stderr, _ = finish(process, 30)
    assert code == 2, stderr
    assert stderr.strip() == f"tapescan: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "tapescan-data").exists()  # refused before anything was built


def test_a_failed_warm_up_ends_the_process_with_one_line(tmp_path: Path) -> None:
    """History the store holds but cannot be read back: no server left running without data."""
    settings = load_settings({"data_dir": tmp_path / "tapescan-data"}, None)
    store = open_store(settings)
    needed = CAL.previous_sessions(DAY, 10)
    symbol = SimMarket(7, 50, CAL).universe.symbols[0]
    store.write(
        "slot_volume",
        pa.table(
            {
                "session": pa.array(needed, pa.date32()),
                "symbol": [symbol] * len(needed),
                "volume": pa.array([b"\x01\x02\x03"] * len(needed), pa.binary()),  # not 192 x u4
            },
            schema=SLOT_VOLUME.schema,
        ),
    )
    daily = {name: [1.0] for name in ("open", "high", "low", "close")}
    store.write(
        "daily_bars",
        pa.table(
            {
                "date": pa.array([needed[-1]], pa.date32()),
                "symbol": [symbol],
                **daily,
                "volume": [1],
            }
        ).cast(DAILY_BARS.schema),
    )
    store.close()
    process = tapescan(
        "run",
        "--symbols",
        "50",
        "--port",
        str(free_port()),
        "--start",
        "2026-11-24T10:00:00-05:00",
        cwd=tmp_path,
    )
    code, stderr, _ = finish(process, 60)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    failures = [line for line in stderr.splitlines() if line.startswith("tapescan: warm-up failed")]
    assert len(failures) == 1, stderr
    assert "slot_volume rows must each hold 192 uint32 volumes" in failures[0]
