"""``tapescan bench ingest --feed massive``: frames through the fake server, the real socket
client and the live feed (``MassiveFeed.events``) into the state, over 127.0.0.1.

The fake serves from a child process (the other core), sending the encoded frames as they are
as soon as the feed subscribes; this process runs what ``tapescan run --feed massive`` runs on
its event loop: the client reading the socket into its bounded queue, the parser draining it
in batches, the feed's event stream, and ``MarketState.apply``. The clock stands on the first
day without a session after the bars' day, so the feed asks REST for nothing (no session: no
gap to fill), never calls a silence stale, and finds no bar dated after its clock.

Reported: events/s of wall time from the subscription to the last event applied, and events
per second of this process's CPU time (one core: everything here runs on one thread, the
socket's reads included).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from tapescan.feeds.massive.feed import MassiveConfig, MassiveFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import MarketCalendar, et_to_ns
from tapescan.market.clock import FastClock
from tapescan.model import AggregateBatch, FeedState, FeedStatus
from tapescan.ops.bench import (
    Progress,
    frame_events,
    frames_inputs,
    machine,
    massive_frames,
    spread,
)
from tapescan.state.market_state import MarketState

KEY = "tapescan-bench-key"
TIMEOUT_S = 600.0  # one repeat may take this long before the benchmark gives up


def _serve(frames_path: str, pipe: Connection) -> None:  # pragma: no cover - child process
    """The fake server's side: every subscription gets all the frames, as fast as they go."""
    from tapescan.feeds.massive.fake_server import FakeMassive  # noqa: PLC0415

    frames = msgspec.msgpack.decode(Path(frames_path).read_bytes(), type=list[str])

    async def main() -> None:
        server = FakeMassive(KEY)
        pipe.send(await server.start(0))
        loop = asyncio.get_running_loop()
        stop = asyncio.ensure_future(loop.run_in_executor(None, pipe.recv))
        try:
            while not stop.done():
                subscribed = asyncio.ensure_future(server.subscribed.wait())
                await asyncio.wait({subscribed, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not subscribed.done():
                    subscribed.cancel()
                    break
                server.subscribed.clear()
                for frame in frames:
                    await server.publish_raw(frame)
        finally:
            await server.close()

    asyncio.run(main())


def _quiet_day(calendar: MarketCalendar, day: dt.date) -> dt.date:
    """The first day after ``day`` without a session (a weekend day or a holiday)."""
    quiet = day + dt.timedelta(days=1)
    while calendar.is_session(quiet):
        quiet += dt.timedelta(days=1)
    return quiet


async def _one_run(
    feed: MassiveFeed, state: MarketState, events: int, quiet: dt.date
) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, events applied) from the feed going live (subscribed) to
    the last event applied."""
    clock = FastClock(et_to_ns(quiet, dt.time(12)))
    stream = feed.events(clock, clock.now_ns())
    applied = 0
    began = cpu_began = 0.0
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async for event in stream:
                if isinstance(event, FeedStatus):
                    if not began and event.state is FeedState.LIVE:
                        began, cpu_began = time.perf_counter(), time.process_time()
                    continue
                if isinstance(event, AggregateBatch):
                    applied += state.apply(event)
                    client = feed.client
                    if client is not None and client.parser.counters.aggregates >= events:
                        break
    finally:
        await stream.aclose()
    return time.perf_counter() - began, time.process_time() - cpu_began, applied


def bench_ingest_massive(
    symbols: int,
    seconds: int,
    events_per_frame: int,
    repeats: int,
    seed: int,
    day: dt.date,
    calendar: MarketCalendar,
    progress: Progress,
) -> dict[str, Any]:
    """The same frames as ``bench ingest``, sent by the fake server over the socket to the
    live feed, ``repeats`` times (a fresh feed and state each time)."""
    market = SimMarket(seed, symbols, calendar)
    frames = massive_frames(market, day, seconds, events_per_frame, progress)
    events = frame_events(frames)
    context = multiprocessing.get_context("spawn")
    rates: list[float] = []
    cpu_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tapescan-bench-") as folder:
        frames_path = Path(folder) / "frames.msgpack"
        frames_path.write_bytes(msgspec.msgpack.encode([f.decode() for f in frames]))
        ours, theirs = context.Pipe()
        server = context.Process(target=_serve, args=(str(frames_path), theirs), daemon=True)
        server.start()
        try:
            if not ours.poll(60):
                raise RuntimeError("the fake server did not start in 60 s")
            port = int(ours.recv())
            config = MassiveConfig(
                api_key=KEY,
                ws_url=f"ws://127.0.0.1:{port}/stocks",
                rest_url="http://127.0.0.1:9",  # never asked: no session, no gap
                channels=("A",),
            )
            reference = pa.table({"symbol": pa.array(market.universe.symbols, pa.string())})
            for repeat in range(repeats):
                progress(f"repeat {repeat + 1} of {repeats}: {events:,} events over the socket")
                feed = MassiveFeed(config, calendar, market.universe, reference)
                state = MarketState(market.universe, calendar, day)
                gc.collect()
                quiet = _quiet_day(calendar, day)
                wall, cpu, applied = asyncio.run(_one_run(feed, state, events, quiet))
                if applied != events:
                    raise RuntimeError(f"applied {applied:,} of {events:,} events")
                rates.append(events / wall)
                cpu_rates.append(events / cpu)
        finally:
            with contextlib.suppress(OSError):
                ours.send("stop")
            server.join(10)
            if server.is_alive():
                server.kill()
    return {
        "benchmark": "ingest",
        "feed": "massive",
        "machine": machine(),
        "inputs": {
            **frames_inputs(symbols, frames, events, repeats),
            "path": "fake server (child process) -> 127.0.0.1 WebSocket -> MassiveClient -> "
            "FrameParser.parse_many -> MassiveFeed.events -> MarketState.apply",
        },
        "events_per_second": spread(rates),
        "events_per_cpu_second": spread(cpu_rates),
        "target": {"events_per_second_at_least": 300_000},
    }
