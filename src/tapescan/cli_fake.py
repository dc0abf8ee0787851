"""``tapescan fake-massive``: Massive's socket and REST API on 127.0.0.1, from the simulator or
from recorded files."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

_err = Console(stderr=True, soft_wrap=True)
DEFAULT_KEY = "tapescan-fake-key"


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"tapescan: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def fake_massive(
    port: Annotated[
        int, typer.Option(help="WebSocket port on 127.0.0.1 (0: any free one).")
    ] = 8100,
    rest_port: Annotated[
        int | None, typer.Option(help="REST port on 127.0.0.1 [default: --port + 1].")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="The one key accepted [default: tapescan-fake-key]."),
    ] = None,
    symbols: Annotated[int, typer.Option(help="Simulated symbols.")] = 11_882,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    start: Annotated[
        str | None,
        typer.Option(help="Market instant to serve from, ISO 8601 with offset [default: now]."),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(help="Market seconds per second of the fake's clock (tests use > 1)."),
    ] = 1.0,
    second_aggregates: Annotated[
        bool, typer.Option(help="Send per-second (A) as well as per-minute (AM) aggregates.")
    ] = True,
    refuse_key: Annotated[
        bool, typer.Option(help="Fault: refuse every key (auth_failed), as a plan without it.")
    ] = False,
    drop_after: Annotated[
        int | None,
        typer.Option(help="Fault: drop the first connection without a close after N frames."),
    ] = None,
    drop_at: Annotated[
        str | None,
        typer.Option(
            help="Fault: cut every connection without a close (1006) when the served market "
            "passes this instant, ISO 8601 with offset."
        ),
    ] = None,
    stall_after: Annotated[
        int | None,
        typer.Option(help="Fault: the first connection gets no more data after N frames."),
    ] = None,
    close_after: Annotated[
        int | None,
        typer.Option(
            help="Fault: the first connection is told --close-with and closed after N frames."
        ),
    ] = None,
    close_with: Annotated[
        str, typer.Option(help="The status sent before --close-after's close.")
    ] = "force_disconnect",
    malformed_every: Annotated[
        int, typer.Option(help="Fault: a malformed frame after every Nth data frame (0: never).")
    ] = 0,
    corrections: Annotated[
        bool,
        typer.Option(
            help="Fault: minute bars first sent short of late trades, corrected (twice) a "
            "minute later; every tenth second's bars sent twice."
        ),
    ] = False,
    rate_limit_every: Annotated[
        int, typer.Option(help="Fault: every Nth REST request answers 429 (0: never).")
    ] = 0,
    html_504_every: Annotated[
        int, typer.Option(help="Fault: every Nth REST request answers an HTML 504 (0: never).")
    ] = 0,
    slow_today_ms: Annotated[
        int,
        typer.Option(help="Fault: each request for today's minute bars takes N ms longer."),
    ] = 0,
    bad_snapshot: Annotated[
        bool,
        typer.Option(
            "--bad-snapshot",
            help="Fault: the full-market snapshot answers a body of the wrong shape.",
        ),
    ] = False,
    no_float_plan: Annotated[
        bool,
        typer.Option(
            "--no-float-plan",
            help="Fault: the float listing answers 403, as to a plan without it.",
        ),
    ] = False,
    bars: Annotated[
        Path | None,
        typer.Option(
            help="Serve these recorded minute bars (docs/data-formats.md) instead of the "
            "simulator; with --daily."
        ),
    ] = None,
    daily: Annotated[Path | None, typer.Option(help="Recorded daily bars, with --bars.")] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Recorded reference data, with --bars (optional).")
    ] = None,
) -> None:
    """Serve a fake Massive (stocks WebSocket and REST) from the simulated market or from
    recorded files, for trying `tapescan run --feed massive` without a key (docs/live.md)."""
    from tapescan.feeds.base import FeedError  # noqa: PLC0415 - fast --help
    from tapescan.feeds.massive.fake_market import FakeMarket  # noqa: PLC0415
    from tapescan.feeds.massive.fake_rest import RestFaults  # noqa: PLC0415
    from tapescan.feeds.massive.fake_run import FakePorts, bind, serve_fake  # noqa: PLC0415
    from tapescan.feeds.massive.fake_server import Faults  # noqa: PLC0415
    from tapescan.feeds.massive.fake_source import (  # noqa: PLC0415
        FakeSource,
        ReplaySource,
        SimSource,
    )
    from tapescan.feeds.replay.feed import ReplayFeed  # noqa: PLC0415
    from tapescan.feeds.sim.generator import SimMarket  # noqa: PLC0415
    from tapescan.market.calendar import market_calendar, ns_to_et  # noqa: PLC0415
    from tapescan.market.clock import make_clock  # noqa: PLC0415

    if symbols < 1 or symbols > 50_000:
        _fail(f"--symbols must be 1-50000, not {symbols}")
    if close_with not in ("force_disconnect", "slow_consumer"):
        _fail(f"--close-with must be force_disconnect or slow_consumer, not {close_with!r}")
    for name, value in (
        ("--drop-after", drop_after),
        ("--stall-after", stall_after),
        ("--close-after", close_after),
    ):
        if value is not None and value < 0:
            _fail(f"{name} must be 0 or more, not {value}")
    if not 0 <= slow_today_ms <= 60_000:
        _fail(f"--slow-today-ms must be 0-60000, not {slow_today_ms}")
    if malformed_every < 0:
        _fail(f"--malformed-every must be 0 or more, not {malformed_every}")
    if not 0 < speed <= 1_000:
        _fail(f"--speed must be above 0 and at most 1000, not {speed:g}")
    # never the environment's MASSIVE_API_KEY: it may be a real key, and the fake prints its own
    chosen_key = key or DEFAULT_KEY
    calendar = market_calendar()
    source: FakeSource
    if bars is None and daily is None and reference is None:
        source = SimSource(SimMarket(seed, symbols, calendar), second_aggregates)
        default_start_ns = time.time_ns()
        served = f"{symbols} symbols"
    else:
        if bars is None or daily is None:
            _fail("--bars and --daily go together (--reference is optional)")
        try:
            replay = ReplayFeed.open(bars, daily, reference, calendar)
            # by default from 04:00 ET of the first session the files can warm up
            default_start_ns = calendar.session(replay.start_session()).pre_open_ns
        except FeedError as error:
            _fail(str(error))
        source = ReplaySource(replay)
        served = f"{len(replay.universe)} symbols from {bars.name} (minute bars only)"
    start_ns = default_start_ns if start is None else _instant_ns("--start", start)
    drop_at_ns = None if drop_at is None else _instant_ns("--drop-at", drop_at)
    try:
        rest_listener = bind(rest_port if rest_port is not None else (port + 1 if port else 0))
    except OSError as error:
        _fail(f"cannot listen on the REST port: {error.strerror or error}")
    session = calendar.trading_day(start_ns)
    if start_ns >= calendar.session(session).post_close_ns:
        session = calendar.next_session(session)
    market = FakeMarket(source, session, corrections)
    market.drop_at_ns = drop_at_ns
    _err.print(f"fake-massive: drawing the history before {session} ...", highlight=False)
    market.draw_history()
    clock = make_clock(start_ns, speed)

    def ready(ports: FakePorts) -> None:
        at = ns_to_et(clock.now_ns())
        _err.print(
            f"fake-massive: {served}, clock {at:%Y-%m-%d %H:%M:%S %Z}"
            f"\n  MASSIVE_API_KEY={chosen_key}"
            f"\n  TAPESCAN_MASSIVE_WS_URL={ports.ws_url}"
            f"\n  TAPESCAN_MASSIVE_REST_URL={ports.rest_url}",
            highlight=False,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        faults = Faults(
            refuse_key=refuse_key,
            drop_after_frames=drop_after,
            stall_after_frames=stall_after,
            kick_after_frames=close_after,
            kick_status=close_with,
            malformed_every=malformed_every,
        )
        await serve_fake(
            market,
            chosen_key,
            clock,
            start_ns,
            port,
            rest_listener,
            faults,
            RestFaults(
                rate_limit_every,
                html_504_every,
                today_delay_s=slow_today_ms / 1000,
                bad_snapshot=bad_snapshot,
                no_float_plan=no_float_plan,
            ),
            stop,
            ready,
        )

    try:
        asyncio.run(main())
    except OSError as error:
        _fail(f"cannot serve: {error.strerror or error}")
    _err.print("fake-massive: stopped", highlight=False)


def _instant_ns(option: str, text: str) -> int:
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{option} {text!r} is not an ISO 8601 instant")
    if instant.tzinfo is None:
        _fail(f"{option} needs a UTC offset, like 2026-11-24T15:00:00+00:00")
    return int(instant.timestamp() * 1e9)
