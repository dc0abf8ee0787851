"""`tapescan replay --until T` prints scans that follow their own definitions exactly."""

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tapescan.cli import app
from tapescan.feeds.sim.dataset import DatasetPaths, FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar

CAL = market_calendar()
LAST_DAY = dt.date(2026, 11, 25)
runner = CliRunner()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    directory = tmp_path_factory.mktemp("replay")
    sessions = [*CAL.previous_sessions(LAST_DAY, 10), LAST_DAY]
    return write_dataset(SimMarket(8, 600, CAL), directory, sessions, FileFormat.PARQUET)


def replay(paths: DatasetPaths, until: str, *extra: str) -> dict[str, Any]:
    symbols = ",".join(pq.read_table(paths.reference).column("symbol").to_pylist())
    result = runner.invoke(
        app,
        [
            "replay",
            "--bars",
            str(paths.minute_bars),
            "--daily",
            str(paths.daily_bars),
            "--reference",
            str(paths.reference),
            "--until",
            until,
            "--symbols",
            symbols,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def passes(value: Any, op: str, target: Any) -> bool:
    if value is None:
        return False
    if op == "between":
        return bool(target[0] <= value <= target[1])
    if op == "in":
        return value in target
    return bool(
        {
            ">": value > target,
            ">=": value >= target,
            "<": value < target,
            "<=": value <= target,
            "==": value == target,
            "!=": value != target,
        }[op]
    )


@pytest.mark.parametrize(
    "until",
    [
        "2026-11-25T08:30:00-05:00",
        "2026-11-25T10:15:00-05:00",
        "2026-11-25T11:02:30-05:00",
        "2026-11-25T15:59:00-05:00",
        "2026-11-25T17:00:00-05:00",
    ],
)
def test_printed_scans_are_rederived_exactly_from_the_printed_symbols(
    paths: DatasetPaths, until: str
) -> None:
    report = replay(paths, until)
    definitions = {d["id"]: d for d in json.loads(runner.invoke(app, ["scans", "--json"]).stdout)}
    symbols = report["symbols"]
    phase = report["session"]["phase"]
    non_empty = 0
    for scan_id, printed in report["scans"].items():
        d = definitions[scan_id]
        sort_field, direction = d["sort"]["field"], d["sort"]["direction"]
        members = [
            s
            for s, values in symbols.items()
            if phase in d["sessions"]
            and values[sort_field] is not None
            and all(passes(values[f["field"]], f["op"], f["value"]) for f in d["filters"])
        ]
        sign = 1 if direction == "asc" else -1
        members.sort(key=lambda s: (sign * float(symbols[s][sort_field]), s))
        expected = members[: d["limit"]]
        assert [row[0] for row in printed["rows"]] == expected, scan_id
        assert printed["columns"] == d["columns"]
        for row in printed["rows"]:
            for column, value in zip(printed["columns"][1:], row[1:], strict=True):
                full = symbols[row[0]][column]
                assert (value is None) == (full is None)
                if isinstance(full, float) and isinstance(value, int):  # a count, rounded
                    assert abs(value - full) <= 0.5, (column, value, full)
                elif isinstance(full, float):
                    assert math.isclose(
                        value, full, abs_tol=0.0051 if full >= 1 or column != "price" else 0.00005
                    )
        non_empty += bool(expected)
    assert non_empty >= 3
    assert report["asof"] == dt.datetime.fromisoformat(until).astimezone(dt.UTC).isoformat()


def test_symbols_default_to_every_symbol_in_a_scan(paths: DatasetPaths) -> None:
    result = runner.invoke(
        app,
        [
            "replay",
            "--bars",
            str(paths.minute_bars),
            "--daily",
            str(paths.daily_bars),
            "--reference",
            str(paths.reference),
            "--until",
            "2026-11-25T10:15:00-05:00",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    in_scans = {row[0] for scan in report["scans"].values() for row in scan["rows"]}
    assert set(report["symbols"]) == in_scans


def test_replay_refuses_an_instant_without_offset_and_unknown_symbols(paths: DatasetPaths) -> None:
    base = ["replay", "--bars", str(paths.minute_bars), "--daily", str(paths.daily_bars)]
    result = runner.invoke(app, [*base, "--until", "2026-11-25T10:15:00"])
    assert result.exit_code == 2
    assert "has no UTC offset" in result.output
    result = runner.invoke(
        app, [*base, "--until", "2026-11-25T10:15:00Z", "--symbols", "NOPE1,NOPE2"]
    )
    assert result.exit_code == 2
    assert "unknown symbols: NOPE1, NOPE2" in result.output


def test_replay_of_a_bad_file_exits_non_zero_naming_file_row_and_field(
    tmp_path: Path, paths: DatasetPaths
) -> None:
    bad = tmp_path / "bars.csv"
    bad.write_text(
        "symbol,ts,open,high,low,close,volume\nAAA,2026-11-25T14:30:00Z,10,9,9.5,9.6,100\n"
    )
    result = runner.invoke(
        app,
        [
            "replay",
            "--bars",
            str(bad),
            "--daily",
            str(paths.daily_bars),
            "--until",
            "2026-11-25T15:00:00Z",
        ],
    )
    assert result.exit_code == 1
    assert "bars.csv: row 1 (line 2), field 'high'" in result.output


def test_scans_json_lists_builtin_and_user_scans(tmp_path: Path) -> None:
    user = tmp_path / "scans.toml"
    user.write_text(
        '[[scan]]\nid = "cheap_movers"\nfilters = [{ field = "price", op = "<", value = 5 }]\nsort = { field = "change_pct" }\n'
    )
    result = runner.invoke(app, ["scans", "--json", "--scans", str(user)])
    assert result.exit_code == 0, result.output
    ids = [d["id"] for d in json.loads(result.stdout)]
    assert len(ids) == 19
    assert ids[-1] == "cheap_movers"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[scan]]\nid = "x"\nlimit = 900\nsort = { field = "volume" }\n')
    result = runner.invoke(app, ["scans", "--scans", str(bad)])
    assert result.exit_code == 2
    assert "limit: must be a whole number from 1 to 200" in result.output


@pytest.mark.parametrize("until", ["2026-11-27T10:00:00-05:00", "2026-11-10T12:00:00-05:00"])
def test_replay_until_a_day_the_files_do_not_hold_is_an_error_naming_the_days_they_do(
    paths: DatasetPaths, until: str
) -> None:
    base = ["replay", "--bars", str(paths.minute_bars), "--daily", str(paths.daily_bars)]
    result = runner.invoke(app, [*base, "--until", until])
    assert result.exit_code == 1, result.output
    day = until[:10]
    held = ", ".join(d.isoformat() for d in [*CAL.previous_sessions(LAST_DAY, 10), LAST_DAY])
    message = f"minute_bars.parquet has no minute bars for {day}; it holds 11 sessions: {held}"
    assert message in " ".join(result.output.split()), result.output


def test_full_precision_values_keep_the_fraction_of_averages_and_dollar_amounts(
    paths: DatasetPaths,
) -> None:
    symbols = replay(paths, "2026-11-25T11:00:00-05:00")["symbols"]
    for column in ("avg_volume_20d", "dollar_volume"):
        values = [v[column] for v in symbols.values() if v[column] is not None]
        assert values, column
        assert any(isinstance(v, float) and not v.is_integer() for v in values), column
    assert all(isinstance(v["volume"], int) for v in symbols.values())


def test_symbol_values_give_whole_counts_as_integers_and_the_rest_as_they_are() -> None:
    from tapescan.indicators.catalog import COLUMNS, Kind  # noqa: PLC0415
    from tapescan.replay_until import symbol_values  # noqa: PLC0415

    numbers = {c.name: np.array([1234.5]) for c in COLUMNS if c.kind is not Kind.TEXT}
    numbers["volume"] = np.array([1200.0])
    text = {c.name: np.array(["x"]) for c in COLUMNS if c.kind is Kind.TEXT}
    values = symbol_values(numbers, text, 0)
    assert values["avg_volume_20d"] == 1234.5
    assert values["dollar_volume"] == 1234.5
    assert values["volume"] == 1200
    assert isinstance(values["volume"], int)
