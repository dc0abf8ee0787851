import datetime as dt
import warnings
from pathlib import Path

import pytest

from tapescan.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TAPESCAN_FEED", "TAPESCAN_PORT", "TAPESCAN_SPEED", "TAPESCAN_SIM_SYMBOLS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_mode_on_localhost() -> None:
    settings = load_settings()
    assert (settings.feed, settings.store, settings.bus) == ("sim", "duckdb", "memory")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.sim_symbols == 11_882


def test_flags_beat_environment_which_beats_the_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "tapescan.toml").write_text("port = 9001\nsim_symbols = 500\nsim_seed = 3\n")
    monkeypatch.setenv("TAPESCAN_PORT", "9002")
    monkeypatch.setenv("TAPESCAN_SIM_SYMBOLS", "600")
    settings = load_settings({"port": 9003, "sim_seed": None})
    assert settings.port == 9003
    assert settings.sim_symbols == 600
    assert settings.sim_seed == 3


def test_speed_takes_a_multiplier_or_max() -> None:
    assert load_settings({"speed": "60"}).speed == 60.0
    assert load_settings({"speed": "max"}).speed is None


def test_start_needs_an_offset() -> None:
    start = load_settings({"start": "2026-11-25T09:25:00-05:00"}).start
    assert start == dt.datetime(2026, 11, 25, 14, 25, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="needs a UTC offset"):
        load_settings({"start": "2026-11-25T09:25:00"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"feed": "bloomberg"},
            "invalid setting feed (TAPESCAN_FEED) = 'bloomberg': Input should be 'sim', 'replay' or 'massive'",
        ),
        (
            {"port": 70_000},
            "invalid setting port (TAPESCAN_PORT) = 70000: Input should be less than or equal to 65535",
        ),
        (
            {"speed": "-2"},
            "invalid setting speed (TAPESCAN_SPEED) = '-2': must be a positive number or 'max'",
        ),
        ({"feed": "replay"}, "feed 'replay' needs bars and daily files"),
    ],
)
def test_an_invalid_value_gives_one_line_naming_the_setting_and_what_is_allowed(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides)
    text = str(caught.value)
    assert message in text
    assert len(text.splitlines()) == 1


def test_an_invalid_environment_value_is_reported_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPESCAN_SIM_SYMBOLS", "lots")
    with pytest.raises(ConfigError, match="invalid setting sim_symbols"):
        load_settings()


def test_unknown_keys_in_the_toml_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tapescan.toml").write_text("prot = 9001\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings()


def test_a_missing_or_malformed_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match=r"config file .*bad\.toml"):
        load_settings(config_file=bad)


def test_a_faster_clock_on_the_massive_feed_is_only_for_a_fake_on_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with warnings.catch_warnings():
        # uvicorn's legacy WebSocket module warns on import (see api/ws_transport.py)
        warnings.simplefilter("ignore", DeprecationWarning)
        from tapescan.node import massive_config  # noqa: PLC0415 - the node's own check

    monkeypatch.setenv("MASSIVE_API_KEY", "k")
    local = {"massive_ws_url": "ws://127.0.0.1:8100", "massive_rest_url": "http://localhost:8101"}
    start = {"start": "2026-11-24T15:00:00+00:00"}
    fake = load_settings({"feed": "massive", "speed": "60", **local, **start})
    assert massive_config(fake).api_key == "k"
    with pytest.raises(ConfigError, match="needs --start"):  # else a wall clock, at 1x
        massive_config(load_settings({"feed": "massive", "speed": "60", **local}))
    for overrides in (
        {"speed": "60", **start},  # Massive itself
        {"speed": "60", "massive_ws_url": "ws://127.0.0.1:8100", **start},  # REST remote
        {"speed": "max", **local},  # a live socket is never replayed flat out
    ):
        with pytest.raises(ConfigError, match="only a fake Massive on 127"):
            massive_config(load_settings({"feed": "massive", **overrides}))
