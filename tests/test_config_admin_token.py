"""TAPESCAN_ADMIN_TOKEN: unset turns admin endpoints off; set, it must be a usable secret."""

from pathlib import Path

import pytest

from tapescan.config import ConfigError, load_settings
from tests.test_cli import run_tapescan

LONG_ENOUGH = "k3Yq-9vR_2mXw7Lp"  # 16 characters


@pytest.fixture(autouse=True)
def in_empty_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPESCAN_ADMIN_TOKEN", raising=False)


def test_no_token_means_admin_endpoints_off() -> None:
    assert load_settings().admin_token is None


def test_a_long_enough_token_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPESCAN_ADMIN_TOKEN", LONG_ENOUGH)
    token = load_settings().admin_token
    assert token is not None
    assert token.get_secret_value() == LONG_ENOUGH


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "is empty; unset it"),
        ("   \t", "is empty; unset it"),
        ("short-token", "is 11 characters; use at least 16"),
        ("with a space inside it", "visible ASCII characters without spaces"),
        ("caf\u00e9-0123456789abcdef", "visible ASCII characters without spaces"),
    ],
)
def test_an_unusable_token_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, token: str, message: str
) -> None:
    monkeypatch.setenv("TAPESCAN_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert text.startswith("invalid setting admin_token (TAPESCAN_ADMIN_TOKEN): ")
    assert message in text
    assert len(text.splitlines()) == 1
    if token.strip():
        assert token not in text


def test_run_with_an_empty_token_stops_at_once_with_one_line(tmp_path: Path) -> None:
    result = run_tapescan(
        "run", "--symbols", "50", "--port", "0", cwd=tmp_path, env={"TAPESCAN_ADMIN_TOKEN": ""}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tapescan: invalid setting admin_token (TAPESCAN_ADMIN_TOKEN): ")
    assert "is empty" in lines[0]
