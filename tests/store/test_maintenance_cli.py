"""``tapescan maintenance run`` on both backends, and its one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tapescan.cli_maintenance import maintenance_app
from tapescan.config import load_settings
from tapescan.store.open import open_store
from tests.services import postgres_url, scratch_schema
from tests.store.test_archive import session_data, sessions

runner = CliRunner()
app = typer.Typer()
app.add_typer(maintenance_app, name="maintenance")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (
        "TAPESCAN_STORE",
        "TAPESCAN_DATA_DIR",
        "TAPESCAN_ARCHIVE_DIR",
        "TAPESCAN_POSTGRES_URL",
        "TAPESCAN_POSTGRES_SCHEMA",
        "TAPESCAN_RETENTION_MINUTE_SESSIONS",
        "TAPESCAN_RETENTION_EVENT_SESSIONS",
        "TAPESCAN_RETENTION_SLOT_SESSIONS",
    ):
        monkeypatch.delenv(name, raising=False)


def fill(overrides: dict[str, object], days: int) -> list[dt.date]:
    store = open_store(load_settings(overrides))
    try:
        found = sessions(days)
        for day in found:
            for name, table in session_data(day, seed=day.toordinal()).items():
                store.write(name, table)
    finally:
        store.close()
    return found


def test_run_retires_the_duckdb_store_and_prints_a_summary(tmp_path: Path) -> None:
    data = tmp_path / "data"
    days = fill({"data_dir": data}, 7)

    result = runner.invoke(app, ["maintenance", "run", "--data-dir", str(data)])

    assert result.exit_code == 0, result.output
    assert "minute_bars" in result.stdout
    assert "hot store:" in result.stdout
    assert "archive:" in result.stdout
    assert "retention" in result.stderr  # the progress bar
    assert sorted(p.name for p in (data / "archive" / "minute_bars").iterdir()) == [
        f"{d}.parquet" for d in days[:2]
    ]
    # defaults: 5 sessions of minute bars and events, 12 of slot volume
    assert not (data / "archive" / "slot_volume").exists()

    again = runner.invoke(app, ["maintenance", "run", "--data-dir", str(data), "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["ok"] is True
    assert report["store"] == "duckdb"
    assert all(t["dropped"] == [] for t in report["tables"])
    assert report["archive_bytes"]["minute_bars"] > 0


def test_run_on_postgres_with_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_url()
    with scratch_schema(url) as schema:
        monkeypatch.setenv("TAPESCAN_POSTGRES_URL", url)
        monkeypatch.setenv("TAPESCAN_POSTGRES_SCHEMA", schema)
        monkeypatch.setenv("TAPESCAN_RETENTION_SLOT_SESSIONS", "5")
        days = fill({"store": "postgres", "data_dir": tmp_path}, 8)

        result = runner.invoke(
            app,
            ["maintenance", "run", "--store", "postgres", "--data-dir", str(tmp_path), "--json"],
        )

        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["store"] == "postgres"
        by_table = {t["table"]: t for t in report["tables"]}
        for name in ("minute_bars", "slot_volume", "scan_events", "scan_entries"):
            assert by_table[name]["archived"] == [d.isoformat() for d in days[:3]]
            assert by_table[name]["kept"] == [d.isoformat() for d in days[3:]]
        before, after = report["hot_bytes_before"], report["hot_bytes_after"]
        assert after["minute_bars"] < before["minute_bars"]
        assert after["daily_bars"] == before["daily_bars"]
        assert report["archive_bytes"]["total"] > 0


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["maintenance", "run", "--store", "mysql"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "tapescan: invalid setting store (TAPESCAN_STORE) = 'mysql': "
        "Input should be 'duckdb' or 'postgres'"
    ]
    config = tmp_path / "bad.toml"
    config.write_text("retention_minute_sessions = 0\n")
    result = runner.invoke(app, ["maintenance", "run", "--config", str(config)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "retention_minute_sessions" in result.stderr
    missing = runner.invoke(app, ["maintenance", "run", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "nope.toml does not exist" in missing.stderr


def test_an_unreachable_database_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPESCAN_POSTGRES_URL", "postgresql://postgres@127.0.0.1:1/tapescan")
    result = runner.invoke(app, ["maintenance", "run", "--store", "postgres"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tapescan: cannot open PostgreSQL store:")
    assert "Traceback" not in result.output
    monkeypatch.delenv("TAPESCAN_POSTGRES_URL")
    result = runner.invoke(app, ["maintenance", "run", "--store", "postgres"])
    assert result.exit_code == 2
    assert "TAPESCAN_POSTGRES_URL" in result.stderr


def test_an_archive_that_cannot_be_written_exits_1_and_keeps_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    days = fill({"data_dir": data}, 6)
    blocked = tmp_path / "archive-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("TAPESCAN_ARCHIVE_DIR", str(blocked))

    result = runner.invoke(app, ["maintenance", "run", "--data-dir", str(data)])

    assert result.exit_code == 1
    assert f"tapescan: minute_bars {days[0]} stays hot: cannot archive" in result.stderr
    assert "Traceback" not in result.output
    store = open_store(load_settings({"data_dir": data}))
    try:
        assert store.sessions("minute_bars") == days
    finally:
        store.close()
