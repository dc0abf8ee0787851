"""Replay files as fast as possible up to an instant and report every scan and symbol then."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tapescan.feeds.base import Feed
from tapescan.indicators.catalog import COLUMNS, Kind
from tapescan.market.calendar import MarketCalendar, ns_to_utc
from tapescan.market.clock import FastClock
from tapescan.ops.memory import release_free_memory
from tapescan.scan.definition import ScanDefinition
from tapescan.scan.scanner import Scanner, text_columns
from tapescan.state.market_state import MarketState


async def state_at(feed: Feed, calendar: MarketCalendar, until_ns: int) -> MarketState:
    """State of the trading day holding ``until_ns``: warm-up, then every event up to it."""
    session = calendar.trading_day(until_ns)
    require_session = getattr(feed, "require_session", None)  # a replay of files says which days
    if callable(require_session):
        require_session(session)
    state = MarketState(feed.universe, calendar, session)
    state.load_reference(feed.reference())
    state.load_warmup(feed.warmup(session))
    release_free_memory()  # the warm-up's history arrays (~180 MB at 12,000 symbols) are gone
    start = calendar.session(session).pre_open_ns
    async for event in feed.events(FastClock(start), start, until_ns):
        state.apply_event(event)
    state.advance_to(until_ns)
    return state


def symbol_values(columns: Mapping[str, Any], text: Mapping[str, Any], row: int) -> dict[str, Any]:
    """Every column of one symbol at full precision (null when unknown)."""
    values: dict[str, Any] = {}
    for column in COLUMNS:
        if column.kind is Kind.TEXT:
            values[column.name] = str(text[column.name][row])
            continue
        value = float(columns[column.name][row])
        if np.isnan(value):
            values[column.name] = None
        elif column.kind is Kind.FLAG:
            values[column.name] = bool(value)
        elif column.kind is Kind.COUNT and value.is_integer():
            values[column.name] = int(value)  # a mean or a dollar amount keeps its fraction
        else:
            values[column.name] = value
    return values


async def replay_report(
    feed: Feed,
    calendar: MarketCalendar,
    until_ns: int,
    scans: Sequence[ScanDefinition],
    symbols: Sequence[str] | None = None,
) -> dict[str, Any]:
    state = await state_at(feed, calendar, until_ns)
    return scan_report(state, feed.reference(), until_ns, scans, symbols)


def scan_report(
    state: MarketState,
    reference: pa.Table,
    until_ns: int,
    scans: Sequence[ScanDefinition],
    symbols: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every scan on ``state`` at ``until_ns``, and the columns of ``symbols`` (default: every
    symbol in a scan), as `replay --until` prints them."""
    universe = state.universe
    text = text_columns(universe, reference)
    scanner = Scanner(state, scans, text)
    output = scanner.cycle()
    report_scans = {}
    members: set[int] = set()
    for scan_id, result in output.results.items():
        compiled = scanner.engine.scans[scan_id]
        members.update(int(i) for i in result.rows)
        report_scans[scan_id] = {
            "title": compiled.definition.title,
            "active": result.active,
            "columns": list(compiled.definition.columns),
            "rows": compiled.wire_rows(result),
        }
    if symbols is None:
        rows = sorted(members, key=lambda i: universe.symbols[i])
    else:
        rows = [universe.index_of(s) for s in symbols]
        unknown = [s for s, i in zip(symbols, rows, strict=True) if i < 0]
        if unknown:
            raise KeyError(", ".join(unknown))
    return {
        "asof": ns_to_utc(until_ns).isoformat(),
        "session": {"date": state.times.date.isoformat(), "phase": output.phase},
        "scans": report_scans,
        "symbols": {universe.symbols[i]: symbol_values(output.columns, text, i) for i in rows},
        "ingest": {"accepted": state.counters.accepted, "rejected": state.counters.rejected},
    }
