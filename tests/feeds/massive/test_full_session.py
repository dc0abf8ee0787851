"""A session through the fake Massive server gives the scans the same data gives the replay path.

`tapescan fake-massive` (120 symbols, clock 60x) serves the simulated market from 09:25 ET with
two faults at once: every minute bar is first sent short of its late trades and corrected (twice)
a minute later, every tenth second's bars are sent twice, and at 10:00 every connection is cut
without a close frame (1006). `tapescan run --feed massive`, the production node, starts on it
with its clock in step: it takes today's minutes from 04:00 from REST, goes live on the socket,
loses it at 10:00, reconnects and fills the gap from REST. Then:

- the socket is live again within 5 s (wall time);
- the node published the symbol halted at 09:51 (LULD halt and reopening messages) in the
  `halts` scan while it was halted, and not after;
- its LULD band columns are the simulator's latest bands, except where the latest were published
  while the socket was not live (REST has no LULD history: they are lost until the next);
- the minute bars it recorded, 04:00-10:08, are the simulator's own, each once, with its OHLCV
  and VWAP (not the trade count: the socket sends only the average trade size);
- every built-in scan, rebuilt from the recorded bars at every fifth minute from 09:30 (the
  restart and time-travel path), equals the same scan on the simulator's own bars (the replay
  path), every row and every column of every symbol listed.

``TAPESCAN_FULL_SESSION=1`` serves the whole session instead (04:00-20:00 ET, the drop still at
10:00; at 120x, ~9 minutes). ``TAPESCAN_FULL_SESSION_SYMBOLS``, ``_SPEED``, ``_START`` (HH:MM
ET) and ``_DATA`` (a data folder kept across runs) scale it up. At 11,882 symbols the socket's
per-second bars limit the speed to ~5x, and the node's warm-up from the fake's REST (~13
minutes) must end before 09:25 by the node's clock: start at 08:00 at 5x, or warm a kept folder
up first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tapescan.feeds.massive.feed import MassiveConfig, MassiveFeed
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import et_to_ns, market_calendar, ns_to_utc
from tapescan.market.clock import FastClock
from tapescan.model import NS_PER_MINUTE, AggregateBatch, BandBatch, HaltEvent, Universe
from tapescan.replay_until import scan_report
from tapescan.scan.library import builtin_scans
from tapescan.state.market_state import MarketState
from tapescan.store.duck import DuckDbStore
from tapescan.store.open import DUCKDB_FILE
from tapescan.store.warm import stored_history, today_from_store, warmup_from_store
from tests.api.server import Server
from tests.feeds.massive.fake_process import KEY, FakeProcess

pytestmark = pytest.mark.slow
SESSION = dt.date(2026, 11, 24)
FULL = os.environ.get("TAPESCAN_FULL_SESSION") == "1"
# seed 7 at 120 symbols: one halt inside the window, 09:51-09:56 ET
SYMBOLS = int(os.environ.get("TAPESCAN_FULL_SESSION_SYMBOLS", "120"))
SPEED = float(os.environ.get("TAPESCAN_FULL_SESSION_SPEED", "120" if FULL else "60"))
# a data folder kept across runs (a second run warms up from its store in seconds)
DATA = os.environ.get("TAPESCAN_FULL_SESSION_DATA")


def et(hour: int, minute: int) -> int:
    return et_to_ns(SESSION, dt.time(hour, minute))


_start = os.environ.get("TAPESCAN_FULL_SESSION_START", "04:00" if FULL else "09:25")
START = et(int(_start[:2]), int(_start[3:]))
DROP = et(10, 0)
END = et(20, 0) if FULL else et(10, 8)
SETTLE_NS = 3 * NS_PER_MINUTE  # after END: the last corrections are in and recorded
HALTED_AT, RESUMED_AT = et(9, 54), et(9, 59)
REPORTS = range(et(9, 30), END + 1, 5 * NS_PER_MINUTE)
BAR_FIELDS = ("open", "high", "low", "close", "volume")


def iso(ts_ns: int) -> str:
    return ns_to_utc(ts_ns).isoformat()


def market_ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1e9)


@dataclasses.dataclass
class Watched:
    """What the test saw of the node while it ran (its clock, in market time)."""

    live_ns: int = 0  # the socket first seen live
    lost_ns: int = 0  # the socket seen not live after that
    back_ns: int = 0  # and live again
    lost_s: float = 0.0  # wall seconds from the first not-live sight to the next live one
    health: dict[str, Any] = dataclasses.field(default_factory=dict)


def watch(node: Server, until_ns: int) -> Watched:
    """Poll the node's health until its clock reaches ``until_ns``."""
    seen = Watched()
    lost_at = 0.0
    deadline = time.monotonic() + (until_ns - START) / SPEED / 1e9 + 180
    while time.monotonic() < deadline:
        health = node.health(lambda _: True)
        now = market_ns(health["clock"]["now"])
        live = health["feed"]["connection"]["socket"]["state"] == "live"
        if live and not seen.live_ns:
            seen.live_ns = now
        elif not live and seen.live_ns and not seen.lost_ns:
            seen.lost_ns, lost_at = now, time.monotonic()
        elif live and seen.lost_ns and not seen.back_ns:
            seen.back_ns, seen.lost_s = now, time.monotonic() - lost_at
        if now >= until_ns:
            seen.health = health
            return seen
        time.sleep(0.1)  # another process's clock; nothing here to await
    raise AssertionError(f"the node's clock did not reach {iso(until_ns)}")


def per_minute(batches: Iterator[AggregateBatch] | list[AggregateBatch]) -> list[AggregateBatch]:
    """Batches split into one per minute start, in time order."""
    out = []
    for batch in batches:
        for start in np.unique(batch.start_ns):
            out.append(batch.take(np.flatnonzero(batch.start_ns == start)))
    return sorted(out, key=lambda b: int(b.start_ns[0]))


Bar = tuple[float, ...]


def bars_of(batches: list[AggregateBatch], symbols: list[str]) -> dict[tuple[str, int], Bar]:
    """Every bar by (symbol, start): OHLCV and VWAP (to the 4 decimals Massive sends)."""
    bars: dict[tuple[str, int], Bar] = {}
    for batch in batches:
        for k, row in enumerate(batch.symbol_index.tolist()):
            key = (symbols[row], int(batch.start_ns[k]))
            assert key not in bars, f"{key} twice"
            values = [float(getattr(batch, name)[k]) for name in BAR_FIELDS]
            bars[key] = (*values, round(float(batch.vwap[k]), 4))
    return bars


def the_simulators(
    universe: Universe, until_ns: int
) -> list[AggregateBatch | HaltEvent | BandBatch]:
    """The simulated market's own minute bars, halts and bands of the session up to
    ``until_ns``, in the rows of ``universe`` (the node's, from the fake's ticker list)."""
    market = SimMarket(7, SYMBOLS, market_calendar())
    rows = universe.indices_of(market.universe.symbols).astype(np.int32)
    pre_open = market_calendar().session(SESSION).pre_open_ns
    events: list[AggregateBatch | HaltEvent | BandBatch] = []

    async def replay() -> None:
        feed = SimFeed(market, second_aggregates=False)
        async for event in feed.events(FastClock(pre_open), pre_open, end_ns=until_ns):
            if isinstance(event, AggregateBatch | BandBatch):
                events.append(dataclasses.replace(event, symbol_index=rows[event.symbol_index]))
            elif isinstance(event, HaltEvent):
                events.append(
                    dataclasses.replace(event, symbol_index=int(rows[event.symbol_index]))
                )

    asyncio.run(replay())
    return events


def reports(
    store: DuckDbStore, universe: Universe, reference: Any, batches: list[AggregateBatch]
) -> dict[int, dict[str, Any]]:
    """Every built-in scan and the columns of its symbols at each of REPORTS, on a state warmed
    up from the store (as a restart) and fed ``batches`` (one minute each) in order."""
    calendar = market_calendar()
    state = MarketState(universe, calendar, SESSION)
    state.load_reference(reference)
    history = stored_history(store, calendar, SESSION)
    assert history.complete, "the node stored its warm-up"
    state.load_warmup(warmup_from_store(store, universe, history))
    scans = builtin_scans()
    out: dict[int, dict[str, Any]] = {}
    pending = iter(batches)
    batch = next(pending, None)
    for at in REPORTS:
        while batch is not None and batch.ts_event_ns <= at:
            state.apply(batch)
            batch = next(pending, None)
        state.advance_to(at)
        report = scan_report(state, reference, at, scans)
        out[at] = {"scans": report["scans"], "symbols": report["symbols"]}
    return out


def test_a_session_with_corrections_and_a_drop_records_what_the_replay_path_scans(
    tmp_path: Path,
) -> None:
    fake = FakeProcess(
        tmp_path,
        *("--start", iso(START), "--speed", f"{SPEED:g}"),
        *("--corrections", "--drop-at", iso(DROP)),
        symbols=SYMBOLS,
    )
    node: Server | None = None
    data = Path(DATA) if DATA else tmp_path / "tapescan-data"
    try:
        config = MassiveConfig(
            api_key=KEY, ws_url=fake.settings["TAPESCAN_MASSIVE_WS_URL"], rest_url=fake.rest_url
        )
        feed = MassiveFeed.open(config, market_calendar())  # the node's universe, in its order
        universe, reference = feed.universe, feed.reference()
        # the node's clock starts ~1 s after it is launched: start it that far ahead
        ahead = market_ns(fake.now()) + int(1.0 * SPEED * 1e9)
        node = Server(
            tmp_path,
            *("--feed", "massive", "--start", iso(ahead), "--speed", f"{SPEED:g}"),
            *("--data-dir", str(data)),
            env=fake.env(),
        )
        # the warm-up's REST requests: seconds at 120 symbols, ~13 minutes at 11,882
        node.health(lambda h: h["scans"]["warmed_up"], timeout_s=max(120.0, SYMBOLS * 0.15))
        skew = market_ns(node.health(lambda _: True)["clock"]["now"]) - market_ns(fake.now())
        print(f"the node's clock is {skew / 1e9:+.1f} s (market) off the fake's")
        assert abs(skew) < 30e9, f"the node's clock is {skew / 1e9:+.0f} s off the fake's"
        watched = watch(node, END + SETTLE_NS)
        socket = watched.health["feed"]["connection"]["socket"]
        assert socket["drops"].get("closed 1006") == 1
        assert watched.lost_ns, "the socket was cut at 10:00"
        assert watched.back_ns, "and came back"
        assert watched.lost_s < 5.0
        assert socket["lulds"] > 0
        assert watched.health["feed"]["connection"]["backfill"]["failed"] == 0

        # halts, as the node published them then (time travel through its recorded history)
        halted_rows = published_halts(node, HALTED_AT)
        assert published_halts(node, RESUMED_AT) == []
        # bands, as the node shows them now
        bands = {}
        for symbol in universe.symbols:
            body = httpx.get(f"{node.url}/api/v1/symbols/{symbol}").json()
            bands[symbol] = (
                market_ns(body["asof"]),
                body["values"]["luld_upper"],
                body["values"]["luld_lower"],
            )
    finally:
        if node is not None:
            node.stop()
        fake.stop()
    symbols = list(universe.symbols)
    last_asof = max(asof for asof, _, _ in bands.values())
    truth = the_simulators(universe, last_asof + 2 * NS_PER_MINUTE)

    halts = [e for e in truth if isinstance(e, HaltEvent)]
    expected_halted = sorted(
        {symbols[h.symbol_index] for h in halts if h.halted and h.ts_event_ns <= HALTED_AT}
        - {symbols[h.symbol_index] for h in halts if not h.halted and h.ts_event_ns <= HALTED_AT}
    )
    assert expected_halted, "the simulator halts a symbol at 09:51"
    assert halted_rows == expected_halted

    # the socket was not live before its first session and between the drop and the reconnect;
    # a band published within a few seconds of the node's last cycle may or may not be in it
    # (widened by the clocks' skew: the node's clock is not the fake's)
    slack = abs(skew) + 5e9
    unheard = [(0, watched.live_ns + slack), (DROP - slack, watched.back_ns + slack)]
    published = [e for e in truth if isinstance(e, BandBatch)]
    compared = 0
    for symbol, (asof, upper, lower) in bands.items():
        row = universe.index_of(symbol)
        of_row = [b for b in published if row in b.symbol_index]
        latest = [b for b in of_row if b.ts_event_ns <= asof]
        times = market_calendar().session(SESSION)
        if not latest or not times.regular_open_ns <= asof < times.regular_close_ns:
            assert upper is None, symbol
            assert lower is None, symbol
            continue
        band = latest[-1]
        if any(lo <= band.ts_event_ns <= hi for lo, hi in unheard) or any(
            abs(b.ts_event_ns - asof) < slack for b in of_row
        ):
            continue
        k = int(np.flatnonzero(band.symbol_index == row)[0])
        history = [(iso(b.ts_event_ns), float(b.upper[b.symbol_index == row][0])) for b in of_row]
        assert (upper, lower) == (band.upper[k], band.lower[k]), (symbol, iso(asof), history)
        compared += 1
    if not FULL:  # a full session's last cycle is after 16:00, when no symbol has bands
        assert compared >= SYMBOLS // 2

    store = DuckDbStore(data / DUCKDB_FILE, 64)
    try:
        times = market_calendar().session(SESSION)
        recorded = per_minute(today_from_store(store, SESSION, universe, times, END))
        simulated = per_minute(
            e for e in truth if isinstance(e, AggregateBatch) and e.ts_event_ns <= END
        )
        ours, theirs = bars_of(recorded, symbols), bars_of(simulated, symbols)
        assert ours.keys() == theirs.keys(), "a minute missing or one too many"
        wrong = [key for key in theirs if ours[key] != theirs[key]]
        assert wrong == [], f"{len(wrong)} bars differ, e.g. {wrong[:3]}"
        assert int(sum(b.volume.sum() for b in recorded)) == int(
            sum(b.volume.sum() for b in simulated)
        )
        live = reports(store, universe, reference, recorded)
        replayed = reports(store, universe, reference, simulated)
    finally:
        store.close()
    for at in REPORTS:
        assert live[at]["scans"] == replayed[at]["scans"], iso(at)
        assert live[at]["symbols"] == replayed[at]["symbols"], iso(at)
    # the scans compared were not empty (at 20:00, the session closed, every one is)
    listed = sum(len(scan["rows"]) for report in live.values() for scan in report["scans"].values())
    assert listed > 0
    print(f"{len(REPORTS)} instants compared, {listed:,} scan rows, {len(theirs):,} bars")


def published_halts(node: Server, at_ns: int) -> list[str]:
    body = httpx.get(f"{node.url}/api/v1/scans/halts/results", params={"at": iso(at_ns)}).json()
    return sorted(row[0] for row in body["rows"])
