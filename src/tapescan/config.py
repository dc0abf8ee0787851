"""Settings from flags, ``TAPESCAN_*`` environment variables and an optional ``tapescan.toml``.

Precedence: flags, then environment, then the TOML file, then defaults. Everything is validated
at start; ``describe_error`` turns a validation failure into one line per bad setting.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("tapescan.toml")
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "tapescan_config_file", default=None
)

FeedName = Literal["sim", "replay", "massive"]
StoreName = Literal["duckdb", "postgres"]
BusName = Literal["memory", "redis"]
LogLevel = Literal["debug", "info", "warning", "error"]


def _parse_speed(value: object) -> object:
    """``max`` (as fast as possible) becomes None; anything else must be a positive number."""
    if isinstance(value, str) and value.strip().lower() == "max":
        return None
    return value


def _positive_speed(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError("must be a positive number or 'max'")
    return value


def _has_offset(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-11-25T09:25:00-05:00")
    return value


MIN_ADMIN_TOKEN_CHARS = 16


def _usable_token(value: SecretStr | None) -> SecretStr | None:
    """An admin token someone cannot guess or mistype: 16+ visible ASCII characters, no spaces.

    An empty variable (``TAPESCAN_ADMIN_TOKEN=``) is refused rather than read as "no token", so
    a deployment that meant to set one finds out at start.
    """
    if value is None:
        return None
    token = value.get_secret_value()
    if not token.strip():
        raise ValueError(
            "is empty; unset it to turn the admin endpoints off, or set a random token, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("must be visible ASCII characters without spaces (it goes in a header)")
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"is {len(token)} characters; use at least {MIN_ADMIN_TOKEN_CHARS}, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return value


Speed = Annotated[float | None, BeforeValidator(_parse_speed), AfterValidator(_positive_speed)]
AdminToken = Annotated[SecretStr | None, AfterValidator(_usable_token)]
Instant = Annotated[dt.datetime | None, AfterValidator(_has_offset)]


class Settings(BaseSettings):
    """Every setting of a tapescan process. Capacities carry their worst-case bytes."""

    model_config = SettingsConfigDict(
        env_prefix="TAPESCAN_", extra="forbid", validate_default=True, frozen=True
    )

    feed: FeedName = "sim"
    store: StoreName = "duckdb"
    bus: BusName = "memory"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)
    data_dir: Path = Path("tapescan-data")
    log_level: LogLevel = "info"

    start: Instant = Field(
        default=None,
        description="Simulated clock start (ISO 8601 with offset); default: now during a "
        "session, otherwise the last session at 09:25 ET.",
    )
    speed: Speed = Field(default=1.0, description="Clock speed multiplier, or 'max'.")

    sim_symbols: int = Field(default=11_882, ge=1, le=50_000)
    sim_seed: int = Field(default=7, ge=0)
    sim_second_aggregates: bool = Field(
        default=True, description="Emit per-second aggregates as well as per-minute ones."
    )

    bars: Path | None = None
    daily: Path | None = None
    reference: Path | None = None

    massive_ws_url: str = Field(
        default="wss://socket.massive.com/stocks",
        pattern=r"^wss?://",
        description="Massive's stocks WebSocket (TAPESCAN_MASSIVE_WS_URL); the key itself is "
        "read from MASSIVE_API_KEY or POLYGON_API_KEY, never from settings.",
    )
    massive_rest_url: str = Field(
        default="https://api.massive.com",
        pattern=r"^https?://",
        description="Massive's REST API (TAPESCAN_MASSIVE_REST_URL).",
    )
    massive_delayed: bool = Field(
        default=False,
        description="Use the 15-minute delayed feed (wss://delayed.massive.com/stocks) when "
        "massive_ws_url is not set.",
    )
    massive_channels: list[str] = Field(
        default_factory=lambda: ["A", "AM", "LULD"],
        description="WebSocket channels subscribed for every symbol.",
    )
    massive_ticker_types: list[str] = Field(
        default_factory=lambda: ["CS", "ETF"],
        description="Ticker types of the universe (/v3/reference/tickers?type=).",
    )
    massive_stale_s: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="A socket silent this long during a session is closed and reconnected "
        "(its gap backfilled from REST).",
    )

    shutdown_timeout_s: float = Field(default=1.5, gt=0, le=30)
    scan_interval_s: float = Field(default=1.0, ge=0.1, le=60, description="Scan cycle period.")
    scans_file: Path | None = Field(default=None, description="TOML file of user scans.")

    admin_token: AdminToken = Field(
        default=None,
        description="Bearer token for scan create/edit/delete; environment only; "
        f"{MIN_ADMIN_TOKEN_CHARS}+ visible ASCII characters.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser."
    )
    ws_queue_frames: int = Field(
        default=256, ge=8, le=65_536, description="Per-client queue (x ~2 KB shared frames)."
    )
    ws_lag_timeout_s: float = Field(default=30.0, gt=0, le=3_600)
    ws_buffer_bytes: int = Field(
        default=256 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Per-client send buffer before the client counts as lagging "
        "(worst case: clients x this; 1,000 x 256 KiB = 256 MiB).",
    )
    ws_behind_s: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="A client that has left bytes written this long ago unacknowledged (TCP) "
        "or unread (its ping unanswered) is lagging: its deltas are dropped until it has read "
        "everything, then it gets fresh snapshots.",
    )
    ws_ping_budget: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="WebSocket pings a cycle at most (a client's write ends with a ping; its pong "
        "shows the client has read what came before). With more clients, each is pinged every "
        "ceil(clients / this) cycles; each pong costs the server ~30 us.",
    )
    ws_stamp_frames: bool = Field(
        default=False,
        description="Add sent_ns (wall clock at cycle end) to deltas, for benchmarks.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers to besides localhost, IP addresses and "
        "`host` (e.g. a reverse proxy's name; '*' turns the Host check off).",
    )
    http_max_connections: int = Field(
        default=2_048,
        ge=16,
        le=1_000_000,
        description="Open connections (HTTP and WebSocket) at most; more are closed at once "
        "(worst case with every one sending a body: this x http_max_body_bytes = 128 MiB).",
    )
    http_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1_024,
        le=64 * 1024 * 1024,
        description="Largest request body (a scan definition is ~1 KiB); larger ones get 413.",
    )
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Time a client has to send a request's headers."
    )
    http_body_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Time a client has to send a request's body."
    )
    http_keep_alive_s: float = Field(
        default=5.0, gt=0, le=600, description="An idle keep-alive connection is closed after this."
    )
    history_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="A history read taking longer answers 503."
    )
    history_max_reads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="History reads running at once (threads; each holds at most a page or one "
        "rebuilt scan, ~1 MB); more wait, within history_timeout_s.",
    )

    postgres_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db for --store postgres; "
        "environment only (TAPESCAN_POSTGRES_URL).",
    )
    postgres_schema: str = Field(
        default="tapescan", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="Schema."
    )
    archive_dir: Path | None = Field(
        default=None, description="Parquet archive of retired sessions; default DATA_DIR/archive."
    )
    retention_minute_sessions: int = Field(
        default=5, ge=1, le=1_000, description="Sessions of minute bars kept hot."
    )
    retention_event_sessions: int = Field(
        default=5, ge=1, le=1_000, description="Sessions of scan events and entries kept hot."
    )
    retention_slot_sessions: int = Field(
        default=12,
        ge=1,
        le=1_000,
        description="Sessions of slot-volume profiles kept hot (>= the RVOL baseline's 10).",
    )
    archive_zstd_level: int = Field(default=9, ge=1, le=22)
    duckdb_memory_mb: int = Field(
        default=16,
        ge=16,
        le=65_536,
        description="DuckDB's buffer pool for the embedded store (its cache of written pages).",
    )
    keyframe_minutes: float = Field(
        default=5.0, gt=0, le=390, description="A full snapshot of every scan this often."
    )
    recorder_queue_rows: int = Field(
        default=100_000,
        ge=1_000,
        le=50_000_000,
        description="Rows held in memory for the store before spilling to Parquet "
        "(worst case ~100 B a row: 100,000 x 100 B = 10 MB).",
    )
    recorder_write_rows: int = Field(
        default=25_000,
        ge=100,
        le=10_000_000,
        description="Most rows one store write takes (one transaction); more queued rows go in "
        "several (~100 B a row in Arrow and again in the store's own copy: 25,000 rows ~5 MB).",
    )
    recorder_flush_s: float = Field(
        default=1.0, gt=0, le=60, description="Longest time a row waits before a write."
    )
    recorder_spill_max_bytes: int = Field(
        default=10 * 1024**3,
        ge=1024**2,
        description="Disk the spill directory may use while the store is down (10 GiB).",
    )
    recorder_write_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=3_600,
        description="A store write that hangs this long is broken off and retried later "
        "(rows meanwhile queue: ~6,000 minute bars and 30 cycles of deltas in 30 s).",
    )

    @property
    def archive_path(self) -> Path:
        return self.archive_dir if self.archive_dir is not None else self.data_dir / "archive"

    @model_validator(mode="after")
    def _replay_needs_files(self) -> Settings:
        if self.feed == "replay" and (self.bars is None or self.daily is None):
            raise ValueError("feed 'replay' needs bars and daily files (--bars, --daily)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


class ConfigError(Exception):
    """Settings that cannot be used; the message is meant for a person, one line per problem."""


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Settings from flags (``overrides``, None values ignored), environment and TOML."""
    path = config_file
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path is not None:
        _refuse_secrets_in(path)
    token = _config_file.set(path)
    try:
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        return Settings(**given)
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None
    except ValueError as error:  # a malformed TOML file
        raise ConfigError(f"config file {path}: {error}") from None
    finally:
        _config_file.reset(token)


SECRET_SETTINGS = ("admin_token", "postgres_url")


def _refuse_secrets_in(path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return  # reported by the settings source with its own message
    for name in SECRET_SETTINGS:
        if name in data:
            raise ConfigError(
                f"config file {path}: {name} is a secret; set TAPESCAN_{name.upper()} in the "
                "environment instead"
            )


def describe_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "settings"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{name}'")
        elif name in SECRET_SETTINGS:  # never echo a secret, not even a wrong one
            lines.append(f"invalid setting {name} (TAPESCAN_{name.upper()}): {message}")
        elif "input" in problem and name != "settings":
            env = f"TAPESCAN_{name.upper()}"
            lines.append(f"invalid setting {name} ({env}) = {problem['input']!r}: {message}")
        else:
            lines.append(f"invalid settings: {message}")
    return "\n".join(lines)
