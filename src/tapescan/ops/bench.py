"""Benchmarks (``tapescan bench ...``): scan cycle, ingest and memory, reported as JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from tapescan import __version__
from tapescan.feeds.massive.parse import FrameParser
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import MarketCalendar, et_to_ns
from tapescan.market.clock import FastClock
from tapescan.model import AggregateBatch, AggregateKind
from tapescan.ops.memory import release_free_memory, rss_bytes
from tapescan.scan.library import builtin_scans
from tapescan.scan.scanner import Scanner, text_columns
from tapescan.state.market_state import MarketState

Progress = Callable[[str], None]


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tapescan": __version__,
        "platform": platform.platform(),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _prepared_state(
    market: SimMarket, calendar: MarketCalendar, day: dt.date, progress: Progress
) -> MarketState:
    feed = SimFeed(market, second_aggregates=False)
    state = MarketState(market.universe, calendar, day)
    state.load_reference(feed.reference())
    progress("warm-up: simulating 10 sessions of history")
    state.load_warmup(feed.warmup(day))
    release_free_memory()
    return state


async def _feed_into(
    state: MarketState,
    feed: SimFeed,
    start_ns: int,
    end_ns: int,
    each: Callable[[AggregateBatch], None] | None = None,
) -> None:
    async for event in feed.events(FastClock(start_ns), start_ns, end_ns):
        state.apply_event(event)
        if each is not None and isinstance(event, AggregateBatch):
            each(event)


def bench_scan(
    symbols: int, cycles: int, seed: int, day: dt.date, calendar: MarketCalendar, progress: Progress
) -> dict[str, Any]:
    """Cycle time (indicators + every built-in scan + deltas) on a live simulated market.

    The market is replayed from 04:00 to 10:30 ET; then one cycle runs after each second of
    per-second aggregates, and only the cycle is timed.
    """
    market = SimMarket(seed, symbols, calendar)
    state = _prepared_state(market, calendar, day, progress)
    start, live = et_to_ns(day, dt.time(4, 0)), et_to_ns(day, dt.time(10, 30))
    progress("replaying 04:00-10:30 ET")
    asyncio.run(_feed_into(state, SimFeed(market, second_aggregates=False), start, live))
    scanner = Scanner(
        state, builtin_scans(), text_columns(market.universe, market.reference_table())
    )
    scanner.cycle()
    timings: list[float] = []
    deltas: list[int] = []
    rows: list[int] = []

    def cycle(batch: AggregateBatch) -> None:
        if batch.kind is not AggregateKind.SECOND or len(timings) >= cycles:
            return
        began = time.perf_counter_ns()
        output = scanner.cycle()
        timings.append((time.perf_counter_ns() - began) / 1e6)
        deltas.append(len(output.deltas))
        rows.append(sum(len(r.rows) for r in output.results.values()))

    progress(f"timing {cycles} cycles")
    end = live + (cycles // 50 + 2) * 60_000_000_000
    gc.collect()
    asyncio.run(_feed_into(state, SimFeed(market, second_aggregates=True), live, end, cycle))
    return {
        "benchmark": "scan",
        "machine": machine(),
        "inputs": {
            "symbols": symbols,
            "scans": len(scanner.engine.scans),
            "cycles": len(timings),
            "seed": seed,
            "session": day.isoformat(),
            "from": "10:30 ET",
            "cadence": "one cycle per second of per-second aggregates",
        },
        "cycle_ms": {
            "median": statistics.median(timings),
            "p99": percentile(timings, 99),
            "mean": statistics.fmean(timings),
            "max": max(timings),
        },
        "deltas_per_cycle": {"median": statistics.median(deltas), "max": max(deltas)},
        "rows_per_cycle": {"median": statistics.median(rows)},
        "target": {"median_cycle_ms_at_most": 5.0},
    }


def frame_events(frames: list[bytes]) -> int:
    """The ``A`` messages in ``frames``."""
    return sum(frame.count(b'"ev":"A"') for frame in frames)


def massive_frames(
    market: SimMarket, day: dt.date, seconds: int, events_per_frame: int, progress: Progress
) -> list[bytes]:
    """Real per-second aggregates of the simulated market encoded as Massive ``A`` frames."""
    frames: list[bytes] = []
    symbols = market.universe.symbols
    feed = SimFeed(market, second_aggregates=True)
    start = et_to_ns(day, dt.time(9, 30))

    async def collect() -> None:
        encoded = 0
        async for event in feed.events(
            FastClock(start), start, start + (seconds + 60) * 1_000_000_000
        ):
            if (
                isinstance(event, AggregateBatch)
                and event.kind is AggregateKind.SECOND
                and encoded < seconds
            ):
                encoded += 1
                messages = [
                    {
                        "ev": "A",
                        "sym": symbols[i],
                        "v": int(v),
                        "av": 0,
                        "op": float(o),
                        "vw": float(w),
                        "o": float(o),
                        "c": float(c),
                        "h": float(h),
                        "l": float(lo),
                        "a": float(w),
                        "z": max(1, int(v) // max(1, int(t))),
                        "s": int(s) // 1_000_000,
                        "e": int(s) // 1_000_000 + 1000,
                    }
                    for i, o, h, lo, c, v, w, t, s in zip(
                        event.symbol_index,
                        event.open,
                        event.high,
                        event.low,
                        event.close,
                        event.volume,
                        event.vwap,
                        event.trades,
                        event.start_ns,
                        strict=True,
                    )
                ]
                for first in range(0, len(messages), events_per_frame):
                    frames.append(msgspec.json.encode(messages[first : first + events_per_frame]))

    progress(f"encoding {seconds} s of per-second aggregates as Massive frames")
    asyncio.run(collect())
    return frames


def frames_inputs(symbols: int, frames: list[bytes], events: int, repeats: int) -> dict[str, Any]:
    """The inputs of an ingest benchmark over ``massive_frames``, for its report."""
    return {
        "symbols": symbols,
        "frames": len(frames),
        "events": events,
        "events_per_frame": round(events / len(frames), 1),
        "bytes": sum(map(len, frames)),
        "repeats": repeats,
        "format": "Massive stocks WebSocket A messages (JSON)",
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a benchmark's repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_ingest(
    symbols: int,
    seconds: int,
    events_per_frame: int,
    frames_per_read: int,
    repeats: int,
    seed: int,
    day: dt.date,
    calendar: MarketCalendar,
    progress: Progress,
) -> dict[str, Any]:
    """Events per second decoded from raw Massive JSON frames and applied to state, one core."""
    market = SimMarket(seed, symbols, calendar)
    frames = massive_frames(market, day, seconds, events_per_frame, progress)
    events = frame_events(frames)
    rates = []
    for _ in range(repeats):
        state = MarketState(market.universe, calendar, day)
        parser = FrameParser(market.universe)
        gc.collect()
        began = time.perf_counter()
        for first in range(0, len(frames), frames_per_read):
            for batch in parser.parse_many(frames[first : first + frames_per_read]).batches:
                state.apply(batch)
        rates.append(events / (time.perf_counter() - began))
        if parser.counters.aggregates != events:
            raise RuntimeError(f"parsed {parser.counters.aggregates} of {events} aggregates")
    return {
        "benchmark": "ingest",
        "machine": machine(),
        "inputs": {
            **frames_inputs(symbols, frames, events, repeats),
            "frames_per_read": frames_per_read,
        },
        "events_per_second": spread(rates),
        "target": {"events_per_second_at_least": 300_000},
    }


def bench_memory(
    symbols: int, seed: int, day: dt.date, calendar: MarketCalendar, progress: Progress
) -> dict[str, Any]:
    """RSS while a whole day is replayed flat out with a scan cycle after every minute."""
    market = SimMarket(seed, symbols, calendar)
    state = _prepared_state(market, calendar, day, progress)
    scanner = Scanner(
        state, builtin_scans(), text_columns(market.universe, market.reference_table())
    )
    marks = {et_to_ns(day, dt.time(h, 0)): f"{h:02d}:00" for h in range(5, 21)}
    samples: dict[str, int] = {}

    def after(batch: AggregateBatch) -> None:
        scanner.cycle()
        for mark, label in list(marks.items()):
            if state.now_ns >= mark:
                gc.collect()
                samples[label] = rss_bytes()
                del marks[mark]

    progress("replaying the whole day flat out")
    began = time.monotonic()
    start, end = et_to_ns(day, dt.time(4, 0)), calendar.session(day).post_close_ns
    asyncio.run(_feed_into(state, SimFeed(market, second_aggregates=False), start, end, after))
    mb = {label: round(value / 2**20, 2) for label, value in samples.items()}
    return {
        "benchmark": "memory",
        "machine": machine(),
        "inputs": {
            "symbols": symbols,
            "seed": seed,
            "session": day.isoformat(),
            "feed": "simulated minute aggregates, flat out",
            "cycle": "every minute",
        },
        "seconds": round(time.monotonic() - began, 1),
        "rss_mb": mb,
        "growth_10_to_16_mb": round(mb["16:00"] - mb["10:00"], 2),
        "target": {"growth_10_to_16_mb_at_most": 5.0},
    }
