from pathlib import Path
from typing import Any

import pytest

from tapescan.scan.definition import MAX_LIMIT, ScanValidationError, parse_scan
from tapescan.scan.library import builtin_scans, load_user_scans, merge

DESIGN_BUILTINS = {
    "gappers_up",
    "gappers_down",
    "top_gainers",
    "top_losers",
    "momentum_up",
    "momentum_down",
    "high_rvol",
    "high_volume",
    "new_highs",
    "new_lows",
    "reversals",
    "volume_spikes",
    "running_up",
    "hod_momentum",
    "low_float_runners",
    "halts",
    "premarket_movers",
    "after_hours_movers",
}


def valid(**changes: Any) -> dict[str, Any]:
    scan: dict[str, Any] = {
        "id": "my_scan",
        "title": "Mine",
        "filters": [{"field": "change_pct", "op": ">=", "value": 5}],
        "sort": {"field": "change_pct", "direction": "desc"},
        "limit": 25,
        "columns": ["price", "change_pct"],
    }
    scan.update(changes)
    return scan


def errors_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ScanValidationError) as caught:
        parse_scan(data)
    return {e.path: e.message for e in caught.value.errors}


def test_every_builtin_scan_of_the_design_is_there_and_valid() -> None:
    scans = builtin_scans()
    assert {s.id for s in scans} == DESIGN_BUILTINS
    assert all(s.builtin and s.columns[0] == "symbol" and s.limit <= MAX_LIMIT for s in scans)
    sessions = {s.id: s.sessions for s in scans}
    assert sessions["premarket_movers"] == ("pre",)
    assert sessions["after_hours_movers"] == ("post",)


def test_a_valid_scan_parses_with_symbol_first() -> None:
    scan = parse_scan(valid())
    assert scan.columns == ("symbol", "price", "change_pct")
    assert scan.sessions == ("pre", "regular", "post")
    assert scan.filters[0].value == 5.0


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            {"filters": [{"field": "chnge_pct", "op": ">", "value": 1}]},
            "filters[0].field",
            "unknown field 'chnge_pct'",
        ),
        (
            {"filters": [{"field": "change_pct", "op": "=>", "value": 1}]},
            "filters[0].op",
            "unknown op '=>'",
        ),
        (
            {"filters": [{"field": "change_pct", "op": ">", "value": "big"}]},
            "filters[0].value",
            "needs a number",
        ),
        (
            {"filters": [{"field": "change_pct", "op": ">", "value": True}]},
            "filters[0].value",
            "needs a number",
        ),
        (
            {"filters": [{"field": "price", "op": "between", "value": [5, 1]}]},
            "filters[0].value",
            "low <= high",
        ),
        (
            {"filters": [{"field": "exchange", "op": ">", "value": "XNAS"}]},
            "filters[0].value",
            "text field takes",
        ),
        (
            {"filters": [{"field": "halted", "op": "==", "value": 1}]},
            "filters[0].value",
            "true or false",
        ),
        (
            {"filters": [{"field": "price", "op": "in", "value": []}]},
            "filters[0].value",
            "non-empty list",
        ),
        ({"filters": [{"field": "price", "op": ">"}]}, "filters[0].value", "is required"),
        ({"limit": 500}, "limit", "from 1 to 200"),
        ({"limit": 0}, "limit", "from 1 to 200"),
        ({"limit": "10"}, "limit", "from 1 to 200"),
        ({"sort": {"field": "sector"}}, "sort.field", "cannot be sorted on"),
        ({"sort": {"field": "price", "direction": "up"}}, "sort.direction", "'asc' or 'desc'"),
        ({"sessions": ["lunch"]}, "sessions", "pre, regular, post"),
        ({"columns": ["price", "colour"]}, "columns[1]", "unknown field 'colour'"),
        ({"id": "Bad Id"}, "id", "lower-case"),
        ({"colour": "red"}, "colour", "unknown key"),
    ],
)
def test_each_problem_is_reported_at_its_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    errors = errors_of(valid(**change))
    assert path in errors, errors
    assert message in errors[path]


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(valid(limit=999, filters=[{"field": "nope", "op": "?", "value": 1}]))
    assert set(errors) == {"limit", "filters[0].field", "filters[0].op"}


def test_user_scans_file_errors_name_the_scan_and_field(tmp_path: Path) -> None:
    path = tmp_path / "scans.toml"
    path.write_text(
        '[[scan]]\nid = "cheap"\nfilters = [{ field = "price", op = "<", value = 5 }]\n'
        'sort = { field = "volume" }\n\n'
        '[[scan]]\nid = "broken"\nlimit = 201\nsort = { field = "volume" }\n'
    )
    with pytest.raises(ScanValidationError) as caught:
        load_user_scans(path)
    assert [e.path for e in caught.value.errors] == [f"{path}: scan[broken].limit"]


def test_user_scans_replace_builtins_of_the_same_id(tmp_path: Path) -> None:
    path = tmp_path / "scans.toml"
    path.write_text(
        '[[scan]]\nid = "top_gainers"\ntitle = "Mine"\nfilters = []\nsort = { field = "change_pct" }\n'
    )
    merged = merge(builtin_scans(), load_user_scans(path))
    assert len(merged) == len(DESIGN_BUILTINS)
    assert next(s for s in merged if s.id == "top_gainers").title == "Mine"


def test_a_malformed_toml_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "scans.toml"
    path.write_text("[[scan]\n")
    with pytest.raises(ScanValidationError, match=str(path)):
        load_user_scans(path)
