"""The ``tapescan`` command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tapescan import __version__
from tapescan.arrow_setup import keep_pandas_out
from tapescan.cli_fake import fake_massive
from tapescan.cli_maintenance import maintenance_app
from tapescan.config import ConfigError, load_settings
from tapescan.feeds.base import FeedError
from tapescan.market.calendar import NotASessionError, market_calendar, ns_to_et

app = typer.Typer(
    name="tapescan",
    help="Real-time US equities scanner: whole-market scans, live deltas, replayable history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: ...]" and "[[scan]]" stay as written
)
err = Console(stderr=True, soft_wrap=True)
out = Console()


class Format(StrEnum):
    parquet = "parquet"
    csv = "csv"


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line (or a few, one per problem) and a non-zero exit; never a traceback."""
    for line in message.splitlines():
        err.print(f"tapescan: {line}", markup=False, highlight=False)
    raise typer.Exit(code)


ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (default: ./tapescan.toml).")
]


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def run(
    feed: Annotated[str | None, typer.Option(help="sim | replay | massive [default: sim]")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [default: 8000].")] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Simulated start, ISO 8601 with offset [default: now in a session, "
            "else the last session at 09:25 ET]."
        ),
    ] = None,
    speed: Annotated[
        str | None, typer.Option(help="Clock speed multiplier or 'max' [default: 1].")
    ] = None,
    symbols: Annotated[int | None, typer.Option(help="Simulated symbols [default: 11882].")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed [default: 7].")] = None,
    bars: Annotated[Path | None, typer.Option(help="Replay: minute bars file.")] = None,
    daily: Annotated[Path | None, typer.Option(help="Replay: daily bars file.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Replay: reference file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [default: ./tapescan-data].")
    ] = None,
    scans_file: Annotated[
        Path | None, typer.Option("--scans", help="TOML file of user scans ([[scan]] tables).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="duckdb | postgres (URL from TAPESCAN_POSTGRES_URL) [default: duckdb]."),
    ] = None,
    scan_interval: Annotated[
        float | None, typer.Option(help="Seconds between scan cycles [default: 1].")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the scanner: feed, web page and API (embedded default: simulated market)."""
    overrides: dict[str, Any] = {
        "feed": feed,
        "host": host,
        "port": port,
        "start": start,
        "speed": speed,
        "sim_symbols": symbols,
        "sim_seed": seed,
        "bars": bars,
        "daily": daily,
        "reference": reference,
        "data_dir": data_dir,
        "scans_file": scans_file,
        "store": store,
        "scan_interval_s": scan_interval,
    }
    try:
        settings = load_settings(overrides, config)
    except ConfigError as error:
        fail(str(error))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from tapescan.ops.memory import limit_malloc_arenas  # noqa: PLC0415

    limit_malloc_arenas()  # before the server, feed and recorder threads exist
    from tapescan.node import Node, listen_socket  # noqa: PLC0415 - keeps `--help` fast
    from tapescan.scan.definition import ScanValidationError  # noqa: PLC0415
    from tapescan.store.base import StoreError  # noqa: PLC0415
    from tapescan.tasks import FatalError  # noqa: PLC0415

    interrupted = _SetUpInterrupt()
    try:
        listener = listen_socket(settings.host, settings.port)  # a taken port fails at once
        node = Node(settings)
        if interrupted.happened:  # a library took the KeyboardInterrupt and went on
            raise KeyboardInterrupt
    except Exception as error:
        if interrupted.happened:  # Ctrl-C, whatever a library made of it: exit 130
            raise KeyboardInterrupt from None
        if isinstance(error, ConfigError | FeedError | NotASessionError | StoreError | FatalError):
            fail(str(error))
        if isinstance(error, ScanValidationError):
            fail("\n".join(f"invalid scan {e.path}: {e.message}" for e in error.errors))
        raise
    finally:
        interrupted.restore()
    clock_at = ns_to_et(node.clock.now_ns())
    pace = "max" if node.clock.speed is None else f"{node.clock.speed:g}x"
    err.print(
        f"tapescan {__version__}: feed {node.feed.name}, clock {clock_at:%Y-%m-%d %H:%M:%S %Z}"
        f" at {pace} speed, "
        f"http://{settings.host}:{settings.port}/",
        highlight=False,
    )
    asyncio.run(_serve(node, listener))
    failure = node.tasks.failure
    if isinstance(failure, FatalError):
        fail(str(failure), code=failure.exit_code)
    if failure is not None:
        fail(f"stopped after an internal failure: {failure}", code=1)
    err.print("tapescan: stopped", highlight=False)


async def _serve(node: Any, listener: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: no more waiting
            err.print("tapescan: stopped at once (second signal)", highlight=False)
            os._exit(130)
        err.print("tapescan: stopping", highlight=False)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    progress = asyncio.create_task(_warmup_progress(node, stop))
    try:
        await node.run(stop, listener)
    finally:
        progress.cancel()


async def _warmup_progress(node: Any, stop: asyncio.Event) -> None:
    """A progress bar on stderr while the process warms up (history, today's bars)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    stats = node.stats
    columns = (TextColumn("warm-up: {task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        while not stats.warmed_up and not stop.is_set():
            total = stats.warmup_total or None
            bar.update(
                task,
                description=stats.warmup_step or "starting",
                total=total,
                completed=stats.warmup_done,
            )
            await asyncio.sleep(0.2)  # a display refresh, not a wait for a condition
    source = node.recovery.warmup_source
    if stats.warmed_up:
        recovered = node.recovery.recovered_bars
        if source == "store and feed":
            taken = node.recovery.warmup_feed_sessions
            source = f"store and {taken} session{'s' * (taken != 1)} from the feed"
        err.print(
            f"tapescan: warmed up from the {source}"
            + (f"; {recovered:,} of today's bars recovered from the store" if recovered else ""),
            highlight=False,
        )


def _default_end_date() -> dt.date:
    """The last session that has finished by now."""
    calendar = market_calendar()
    now_ns = time.time_ns()
    session = calendar.trading_day(now_ns)
    if calendar.session(session).post_close_ns > now_ns:
        session = calendar.previous_sessions(session, 1)[0]
    return session


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the data set to.")],
    symbols: Annotated[int, typer.Option(min=1, max=50_000, help="Number of symbols.")] = 11_882,
    days: Annotated[int, typer.Option(min=1, max=260, help="Sessions of minute bars.")] = 11,
    end_date: Annotated[
        str | None, typer.Option(help="Last session, YYYY-MM-DD [default: last finished session].")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed, same bytes.")] = 7,
    file_format: Annotated[Format, typer.Option("--format", help="File format.")] = Format.parquet,
) -> None:
    """Write a simulated data set (minute bars, daily bars, reference) in the replay formats."""
    from tapescan.feeds.sim.dataset import FileFormat, write_dataset  # noqa: PLC0415
    from tapescan.feeds.sim.generator import SimMarket  # noqa: PLC0415

    calendar = market_calendar()
    try:
        last = dt.date.fromisoformat(end_date) if end_date else _default_end_date()
    except ValueError:
        fail(f"invalid --end-date {end_date!r}: use YYYY-MM-DD, e.g. 2026-11-25")
    try:
        session = calendar.session_on_or_before(last)
        if session != last:
            err.print(
                f"tapescan: {last} is not a session; ending on {session} instead", highlight=False
            )
        sessions = [*calendar.previous_sessions(session, days - 1), session]
        started = time.monotonic()
        market = SimMarket(seed, symbols, calendar)
        with Progress(
            TextColumn("[bold]simulate[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sessions"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=False,
        ) as progress:
            task = progress.add_task("planning", total=len(sessions))

            def on_day(day: dt.date) -> None:
                progress.update(task, advance=1, description=f"wrote {day.isoformat()}")

            paths = write_dataset(market, out_dir, sessions, FileFormat(file_format.value), on_day)
    except NotASessionError as error:
        fail(str(error))
    elapsed = time.monotonic() - started
    for path in (paths.minute_bars, paths.daily_bars, paths.reference):
        out.print(f"{path}  {path.stat().st_size / 1e6:,.1f} MB", highlight=False)
    err.print(
        f"tapescan: {symbols} symbols, {len(sessions)} sessions ({sessions[0]} to {sessions[-1]}) "
        f"in {elapsed:.1f} s",
        highlight=False,
    )


ScansOption = Annotated[
    Path | None, typer.Option("--scans", help="TOML file of user scans ([[scan]] tables).")
]


def _scan_definitions(scans_file: Path | None) -> list[Any]:
    from tapescan.scan.definition import ScanValidationError  # noqa: PLC0415
    from tapescan.scan.library import builtin_scans, load_user_scans, merge  # noqa: PLC0415

    try:
        user = load_user_scans(scans_file) if scans_file is not None else []
        return merge(builtin_scans(), user)
    except ScanValidationError as error:
        fail("\n".join(f"invalid scan {e.path}: {e.message}" for e in error.errors))


@app.command()
def scans(
    as_json: Annotated[bool, typer.Option("--json", help="Print definitions as JSON.")] = False,
    columns: Annotated[
        bool, typer.Option("--columns", help="List the columns scans can use.")
    ] = False,
    scans_file: ScansOption = None,
) -> None:
    """List every scan (built-in and user) or, with --columns, every column."""
    import msgspec  # noqa: PLC0415

    from tapescan.indicators.catalog import COLUMNS  # noqa: PLC0415

    if columns:
        rows = [
            {"name": c.name, "kind": c.kind.value, "description": c.description} for c in COLUMNS
        ]
        if as_json:
            sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        else:
            for row in rows:
                out.print(
                    f"{row['name']:<22} {row['kind']:<8} {row['description']}", highlight=False
                )
        return
    definitions = [d.to_dict() for d in _scan_definitions(scans_file)]
    if as_json:
        sys.stdout.write(msgspec.json.encode(definitions).decode() + "\n")
        return
    for d in definitions:
        sessions = ",".join(d["sessions"])
        order = f"{d['sort']['field']} {d['sort']['direction']}"
        out.print(f"{d['id']:<20} {d['title']:<28} [{sessions}] sort {order}", highlight=False)


@app.command()
def replay(
    bars: Annotated[Path, typer.Option(help="Minute bars file (.parquet or .csv).")],
    daily: Annotated[Path, typer.Option(help="Daily bars file.")],
    until: Annotated[str, typer.Option(help="Instant to stop at, ISO 8601 with offset.")],
    reference: Annotated[Path | None, typer.Option(help="Reference file.")] = None,
    output: Annotated[str, typer.Option(help="Output format (json).")] = "json",
    symbols: Annotated[
        str | None,
        typer.Option(help="Symbols to report, e.g. AAPL,MSFT [default: every symbol in a scan]."),
    ] = None,
    scans_file: ScansOption = None,
    scan_interval: Annotated[
        float | None,
        typer.Option(
            help="The scan cycle grid in seconds; --until is taken to the cycle at or "
            "before it, as a live run records it [default: 1]."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Replay files as fast as possible up to --until and print every scan and symbol as JSON."""
    import msgspec  # noqa: PLC0415

    from tapescan.feeds.replay.feed import ReplayFeed  # noqa: PLC0415
    from tapescan.market.calendar import datetime_to_ns  # noqa: PLC0415
    from tapescan.replay_until import replay_report  # noqa: PLC0415

    if output != "json":
        fail(f"invalid --output {output!r}: only json is supported")
    try:
        until_ns = datetime_to_ns(dt.datetime.fromisoformat(until.replace("Z", "+00:00")))
    except ValueError as error:
        fail(f"invalid --until {until!r}: {error}; e.g. 2026-11-25T10:15:00-05:00")
    try:
        settings = load_settings({"scan_interval_s": scan_interval}, config)
    except ConfigError as error:
        fail(str(error))
    grid_ns = round(settings.scan_interval_s * 1e9)
    until_ns -= until_ns % grid_ns
    definitions = _scan_definitions(scans_file)
    wanted = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    calendar = market_calendar()
    try:
        feed = ReplayFeed.open(bars, daily, reference, calendar)
        report = asyncio.run(replay_report(feed, calendar, until_ns, definitions, wanted))
    except (FeedError, NotASessionError) as error:
        fail(str(error), code=1)
    except KeyError as error:
        fail(f"unknown symbols: {error.args[0]}")
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


bench_app = typer.Typer(
    help="Benchmarks; JSON on stdout, progress on stderr.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
app.add_typer(maintenance_app, name="maintenance")
app.command("fake-massive")(fake_massive)
BENCH_DAY = "2026-11-24"
JsonOption = Annotated[bool, typer.Option("--json", help="Compact JSON (default: indented).")]
DayOption = Annotated[str, typer.Option("--session", help="Simulated session, YYYY-MM-DD.")]


def _print_report(report: dict[str, Any], compact: bool) -> None:
    import msgspec  # noqa: PLC0415

    encoded = msgspec.json.encode(report)
    text = encoded.decode() if compact else msgspec.json.format(encoded, indent=2).decode()
    sys.stdout.write(text + "\n")


def _bench_session(day: str) -> dt.date:
    try:
        session = dt.date.fromisoformat(day)
    except ValueError:
        fail(f"invalid --session {day!r}: use YYYY-MM-DD")
    if not market_calendar().is_session(session):
        fail(f"--session {day} is not an XNYS trading session")
    return session


def _progress(message: str) -> None:
    err.print(f"tapescan bench: {message}", highlight=False)


@bench_app.command("scan")
def bench_scan_command(
    symbols: Annotated[int, typer.Option(min=1, max=50_000)] = 11_882,
    cycles: Annotated[int, typer.Option(min=10, max=100_000)] = 600,
    seed: int = 7,
    session: DayOption = BENCH_DAY,
    as_json: JsonOption = False,
) -> None:
    """Scan cycle time: indicators + every built-in scan + deltas, median and p99."""
    from tapescan.ops.bench import bench_scan  # noqa: PLC0415

    day = _bench_session(session)
    _print_report(bench_scan(symbols, cycles, seed, day, market_calendar(), _progress), as_json)


class IngestPath(StrEnum):
    FRAMES = "frames"
    MASSIVE = "massive"


@bench_app.command("ingest")
def bench_ingest_command(
    symbols: Annotated[int, typer.Option(min=1, max=50_000)] = 11_882,
    seconds: Annotated[
        int, typer.Option(min=1, max=3_600, help="Seconds of market to encode.")
    ] = 120,
    events_per_frame: Annotated[
        int, typer.Option(min=1, max=100_000, help="A messages per WebSocket frame.")
    ] = 500,
    frames_per_read: Annotated[
        int, typer.Option(min=1, max=1_000, help="Frames drained from the socket per state update.")
    ] = 1,
    repeats: Annotated[int, typer.Option(min=1, max=50)] = 5,
    seed: int = 7,
    session: DayOption = BENCH_DAY,
    feed: Annotated[
        IngestPath,
        typer.Option(
            help="frames: decoded in this process; massive: sent by the fake server (another "
            "process) over a 127.0.0.1 WebSocket to the live feed's client."
        ),
    ] = IngestPath.FRAMES,
    as_json: JsonOption = False,
) -> None:
    """Per-second aggregate frames (Massive JSON) decoded and applied to state, events/s."""
    from tapescan.ops.bench import bench_ingest  # noqa: PLC0415

    day = _bench_session(session)
    if feed is IngestPath.MASSIVE:
        if frames_per_read != 1:
            fail("--frames-per-read is for --feed frames (the socket's reads decide it)")
        from tapescan.ops.ingest_bench import bench_ingest_massive  # noqa: PLC0415

        report = bench_ingest_massive(
            symbols, seconds, events_per_frame, repeats, seed, day, market_calendar(), _progress
        )
        _print_report(report, as_json)
        return
    report = bench_ingest(
        symbols,
        seconds,
        events_per_frame,
        frames_per_read,
        repeats,
        seed,
        day,
        market_calendar(),
        _progress,
    )
    _print_report(report, as_json)


@bench_app.command("memory")
def bench_memory_command(
    symbols: Annotated[int, typer.Option(min=1, max=50_000)] = 11_882,
    seed: int = 7,
    session: DayOption = BENCH_DAY,
    as_json: JsonOption = False,
) -> None:
    """RSS through a whole simulated day replayed flat out (10:00 versus 16:00)."""
    from tapescan.ops.bench import bench_memory  # noqa: PLC0415

    day = _bench_session(session)
    _print_report(bench_memory(symbols, seed, day, market_calendar(), _progress), as_json)


@bench_app.command("fanout")
def bench_fanout_command(
    clients: Annotated[int, typer.Option(min=1, max=5_000, help="Clients that read.")] = 100,
    idle_clients: Annotated[
        int, typer.Option(min=0, max=1_000, help="Clients that never read (phase two).")
    ] = 0,
    symbols: Annotated[int, typer.Option(min=1, max=50_000)] = 11_882,
    seconds: Annotated[float, typer.Option(min=5, max=3_600, help="Measurement length.")] = 20,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, max=20, help="With idle clients: windows with them, each followed by one alone."
        ),
    ] = 3,
    as_json: JsonOption = False,
) -> None:
    """WebSocket delivery latency, server CPU and RSS with N real clients on 127.0.0.1."""
    from tapescan.ops.fanout_bench import bench_fanout  # noqa: PLC0415

    report = bench_fanout(symbols, clients, idle_clients, seconds, _progress, rounds=rounds)
    _print_report(report, as_json)


@bench_app.command("storage")
def bench_storage_command(
    symbols: Annotated[int, typer.Option(min=1, max=50_000)] = 11_882,
    session: DayOption = BENCH_DAY,
    seed: int = 7,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL to measure in (a scratch schema, dropped at the end); default "
            "TAPESCAN_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test."
        ),
    ] = None,
    sessions: Annotated[
        int,
        typer.Option(
            min=1,
            max=100,
            help="Sessions written for the boundedness check (1: one session, no check).",
        ),
    ] = 12,
    as_json: JsonOption = False,
) -> None:
    """Bytes per simulated session hot in DuckDB and PostgreSQL and archived; hot size bounded."""
    from tapescan.ops.storage_bench import bench_storage, default_postgres_url  # noqa: PLC0415

    day = _bench_session(session)
    report = bench_storage(
        symbols,
        seed,
        day,
        market_calendar(),
        postgres_url or default_postgres_url(),
        sessions,
        _progress,
    )
    _print_report(report, as_json)


class _SetUpInterrupt:
    """Ctrl-C while the process is built raises KeyboardInterrupt as usual, and is remembered:
    DuckDB turns it into its own errors when it lands inside one of its calls (``RuntimeError:
    Query interrupted``, or ``InvalidInputException ... KeyboardInterrupt`` while it reads an
    Arrow table), which would otherwise end the process with a traceback."""

    def __init__(self) -> None:
        self.happened = False
        self._previous = signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.happened = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)


def main() -> None:
    keep_pandas_out()  # pyarrow would import it (~55 MB) for nothing
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
