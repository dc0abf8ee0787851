import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from tapescan.cli import app
from tests.api.server import Server

runner = CliRunner()


def tapescan(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tapescan", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_tapescan(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`tapescan ARGS` run to its end (60 s at most); TAPESCAN_ADMIN_TOKEN only from ``env``."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full.pop("TAPESCAN_ADMIN_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "tapescan", *args],
        cwd=cwd,
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_simulate_writes_the_three_files_and_snaps_a_holiday_end_date(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--symbols",
            "40",
            "--days",
            "2",
            "--end-date",
            "2026-11-26",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2026-11-26 is not a session; ending on 2026-11-25" in result.output
    dates = set(pq.read_table(tmp_path / "daily_bars.parquet").column("date").to_pylist())
    assert max(dates).isoformat() == "2026-11-25"
    assert (tmp_path / "minute_bars.parquet").stat().st_size > 0
    assert pq.read_table(tmp_path / "reference.parquet").num_rows == 40


def test_simulate_refuses_a_malformed_end_date_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--end-date", "26/11/2026"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "tapescan: invalid --end-date '26/11/2026': use YYYY-MM-DD, e.g. 2026-11-25"
    )


def test_simulate_refuses_dates_before_the_simulators_history(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--symbols",
            "5",
            "--days",
            "1",
            "--end-date",
            "2019-06-03",
        ],
    )
    assert result.exit_code == 2
    assert "the simulator's history starts on 2020-01-02" in result.output


def test_run_refuses_an_invalid_setting_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    process = tapescan("run", "--feed", "bloomberg", cwd=tmp_path)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [
        "tapescan: invalid setting feed (TAPESCAN_FEED) = 'bloomberg': Input should be 'sim', 'replay' or 'massive'"
    ]


def test_run_serves_health_and_stops_within_two_seconds_on_ctrl_c(tmp_path: Path) -> None:
    server = Server(tmp_path, "--symbols", "300")
    try:
        health = server.health(lambda h: h["scans"]["cycles"] >= 2)
        assert health["status"] == "ok"
        assert health["feed"]["name"] == "sim"
        assert health["feed"]["aggregates"] > 0
        assert health["scans"]["warmed_up"]
        assert health["session"]["phase"] in {"pre", "regular", "post", "closed"}
        began = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        _, stderr = server.process.communicate(timeout=5)
        assert time.monotonic() - began < 2.0
        assert server.process.returncode == 0, stderr
        assert "tapescan: stopped" in stderr
    finally:
        server.stop()


def test_run_with_a_bad_replay_file_exits_non_zero_naming_file_row_and_field(
    tmp_path: Path,
) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "symbol,ts,open,high,low,close,volume\nAAA,2026-11-25T14:30:00Z,10,9,9.5,9.6,100\n"
    )
    daily = tmp_path / "daily.csv"
    daily.write_text("symbol,date,open,high,low,close,volume\nAAA,2026-11-24,10,10.5,9.5,10,1000\n")
    process = tapescan(
        "run", "--feed", "replay", "--bars", str(bars), "--daily", str(daily), cwd=tmp_path
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert stderr.strip().splitlines() == [
        "tapescan: bars.csv: row 1 (line 2), field 'high': high 9.0 is below low 9.5"
    ]


def test_help_keeps_text_in_square_brackets() -> None:
    """Rich markup used to swallow "[default: 127.0.0.1]" and "[[scan]]" from the help."""
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Address to bind [default: 127.0.0.1]." in result.output
    assert "TOML file of user scans ([[scan]] tables)." in result.output
