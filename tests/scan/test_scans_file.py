"""A bad user scans file (or saved API scans file) stops the start with one line naming it."""

from pathlib import Path

import pytest

from tapescan.scan.definition import ScanValidationError
from tapescan.scan.library import load_user_scans
from tapescan.scan.registry import ScanRegistry
from tests.test_cli import run_tapescan

GOOD_SCAN = b'[[scan]]\nid = "cheap"\nsort = { field = "volume" }\n'

# name: (file bytes, the one line `tapescan run --scans <name>` must print)
BAD_FILES = {
    "latin1.toml": (
        b'[[scan]]\nid = "cheap"\ntitle = "Caf\xe9"\nsort = { field = "volume" }\n',
        "tapescan: invalid scan latin1.toml: not UTF-8 text (byte 0xe9 on line 3)",
    ),
    "duplicate.toml": (
        GOOD_SCAN + b'\n[[scan]]\nid = "cheap"\nsort = { field = "change_pct" }\n',
        "tapescan: invalid scan duplicate.toml: scan[cheap].id: 'cheap' is used by [[scan]] "
        "tables 1 and 2; each id once per file",
    ),
    "string.toml": (
        b'scan = "x"\n',
        "tapescan: invalid scan string.toml: scan: must be an array of tables, written [[scan]] "
        "(one each)",
    ),
    "unknown_key.toml": (
        b"scans = []\n" + GOOD_SCAN,
        "tapescan: invalid scan unknown_key.toml: scans: unknown top-level key; the file holds "
        "[[scan]] tables only",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_run_with_a_bad_scans_file_exits_with_one_line_naming_the_file(
    tmp_path: Path, name: str
) -> None:
    content, line = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    result = run_tapescan("run", "--scans", name, "--symbols", "50", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]


def test_the_scans_command_refuses_a_non_utf8_file_too(tmp_path: Path) -> None:
    content, line = BAD_FILES["latin1.toml"]
    (tmp_path / "latin1.toml").write_bytes(content)
    result = run_tapescan("scans", "--scans", "latin1.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]


def test_every_problem_of_a_file_is_listed_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scans.toml"
    path.write_text(
        'title = "stray"\n\n'
        '[[scan]]\nid = "a"\nsort = { field = "volume" }\n\n'
        '[[scan]]\nid = "b"\nlimit = 0\nsort = { field = "volume" }\n\n'
        '[[scan]]\nid = "a"\nsort = { field = "volume" }\n'
    )
    with pytest.raises(ScanValidationError) as caught:
        load_user_scans(path)
    assert [e.path for e in caught.value.errors] == [
        f"{path}: title",
        f"{path}: scan[b].limit",
        f"{path}: scan[a].id",
    ]


@pytest.mark.parametrize("content", ['scan = ["x"]\n', "scan = 3\n", "[scan]\nid = 'a'\n"])
def test_scan_must_be_an_array_of_tables(tmp_path: Path, content: str) -> None:
    path = tmp_path / "scans.toml"
    path.write_text(content)
    with pytest.raises(ScanValidationError, match="must be an array of tables"):
        load_user_scans(path)


def test_an_empty_file_or_distinct_ids_load(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# no scans yet\n")
    assert load_user_scans(empty) == []
    two = tmp_path / "two.toml"
    two.write_bytes(GOOD_SCAN + b'\n[[scan]]\nid = "dear"\nsort = { field = "price" }\n')
    assert [s.id for s in load_user_scans(two)] == ["cheap", "dear"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ScanValidationError, match=f"{path}: No such file"):
        load_user_scans(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff[]", "cannot be read"),
        (b'[{"id": "a"', "cannot be read"),
        (b'{"id": "a"}', "must be a JSON list of scans"),
        (b'[{"id": "a", "limit": 999, "sort": {"field": "volume"}}]', r"scan\[a\]\.limit"),
    ],
)
def test_a_damaged_saved_scans_file_is_named_and_left_as_it_is(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "user_scans.json"
    path.write_bytes(content)
    with pytest.raises(ScanValidationError, match=message) as caught:
        ScanRegistry(None, path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_scans_saved_through_the_api_load_again_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "user_scans.json"
    ScanRegistry(None, path).create({"id": "saved", "sort": {"field": "volume"}, "limit": 7})
    again = ScanRegistry(None, path).get("saved")
    assert again is not None
    assert again.limit == 7
