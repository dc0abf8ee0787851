"""REST routes over recorded history: a scan at a past instant, its entries and exits, bars.

Every list is a page of at most ``limit`` rows (max 1000) in a total order; ``next_cursor``
carries the last key returned, so a range of any length is walked page by page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from tapescan.api import examples, json_limits
from tapescan.api.errors import ApiError
from tapescan.api.history_reads import HistoryReads
from tapescan.market.calendar import MarketCalendar, datetime_to_ns, ns_to_utc
from tapescan.publish.frames import iso
from tapescan.store.history import History, HistoryGapError

MAX_PAGE = 1000
DEFAULT_PAGE = 100
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size (at most 1000).")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]
Instant = Annotated[
    str | None,
    Query(description="ISO 8601 instant with offset, e.g. 2026-11-24T09:45:00-05:00."),
]


EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
MAX_CURSOR_CHARS = 512


def parse_instant(text: str, name: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "bad_instant", f"{name}={text!r} is not ISO 8601, e.g. 2026-11-24T09:45:00-05:00"
        ) from None
    if value.tzinfo is None:
        raise ApiError(
            400,
            "bad_instant",
            f"{name}={text!r} needs a UTC offset, e.g. 2026-11-24T09:45:00-05:00",
        )
    if not EARLIEST <= value < LATEST:
        raise ApiError(
            400,
            "bad_instant",
            f"{name}={text!r} is out of range ({EARLIEST.year} to {LATEST.year - 1})",
        )
    return value


def parse_date(text: str, name: str) -> dt.date:
    try:
        value = dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ApiError(400, "bad_date", f"{name}={text!r} is not a date, e.g. 2026-11-24") from None
    if not EARLIEST.date() <= value < LATEST.date():
        span = f"{EARLIEST.year} to {LATEST.year - 1}"
        raise ApiError(400, "bad_date", f"{name}={text!r} is out of range ({span})")
    return value


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode()


def bad_cursor() -> ApiError:
    return ApiError(400, "bad_cursor", "cursor is not one this server gave; start without it")


def cursor_json(cursor: str) -> Any:
    """The JSON inside a cursor, or bad_cursor."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad_cursor()
    try:
        return json_limits.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError):  # BadJsonError and non-ASCII text are ValueErrors
        raise bad_cursor() from None


def decode_cursor(cursor: str, *kinds: type) -> list[Any]:
    """A cursor's key: one value per kind, each of that type (int never a bool)."""
    found = cursor_json(cursor)
    key = found.get("k") if isinstance(found, dict) else None
    if not isinstance(key, list) or len(key) != len(kinds):
        raise bad_cursor()
    for value, kind in zip(key, kinds, strict=True):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad_cursor()
    return key


def cursor_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    offset: int = decode_cursor(cursor, int)[0]
    if offset < 0:
        raise bad_cursor()
    return offset


def cursor_time(cursor: str, parse: Callable[[str], Any]) -> Any:
    text: str = decode_cursor(cursor, str)[0]
    try:
        return parse(text)
    except ValueError:
        raise bad_cursor() from None


def _aware_instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None or not EARLIEST <= value < LATEST:
        raise ValueError(text)
    return value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def scan_at(
    reads: HistoryReads,
    history: History,
    calendar: MarketCalendar,
    scan_id: str,
    at: str,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The page of a scan's result as published at ``at`` (GET /scans/{id}/results?at=)."""
    at_ns = datetime_to_ns(parse_instant(at, "at"))
    offset = cursor_offset(cursor)
    session = calendar.trading_day(at_ns)  # NotASessionError: 400 outside_calendar
    try:
        snapshot = await reads.run(history.scan_at, scan_id, session, at_ns)
    except HistoryGapError as error:
        raise ApiError(500, "history_gap", f"recorded history is incomplete: {error}") from None
    if snapshot is None:
        span = await reads.run(history.coverage, scan_id)
        where = (
            f"; recorded from {iso(span[0])} to {iso(span[1])}"
            if span
            else "; nothing recorded for it yet"
        )
        raise ApiError(404, "no_history", f"no history of scan '{scan_id}' at {at}{where}")
    rows = [list(r) for r in snapshot.rows[offset : offset + limit]]
    end = offset + len(rows)
    return {
        "scan": scan_id,
        "seq": snapshot.seq,
        "asof": iso(snapshot.asof_ns),
        "at": ns_to_utc(at_ns).isoformat(),
        "columns": list(snapshot.columns),
        "rows": rows,
        "next_cursor": encode_cursor([end]) if end < len(snapshot.rows) else None,
    }


def history_router(
    reads: HistoryReads,
    history: Callable[[], History],
    calendar: MarketCalendar,
    now_ns: Callable[[], int],
    known: Callable[[str], bool],
) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/scans/{scan_id}/events", responses=examples.EVENTS)
    async def scan_events(
        scan_id: str,
        start: Annotated[str | None, Query(alias="from", description="ISO 8601 instant.")] = None,
        end: Annotated[str | None, Query(alias="to", description="ISO 8601 instant.")] = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Symbols entering and leaving a scan over [from, to), oldest first.

        Defaults: from the start (04:00 ET) of the current trading day, to now.
        """
        now = now_ns()
        from_ns = (
            datetime_to_ns(parse_instant(start, "from"))
            if start
            else calendar.session(calendar.trading_day(now)).pre_open_ns
        )
        to_ns = datetime_to_ns(parse_instant(end, "to")) if end else now + 1
        after = None
        if cursor:
            key = decode_cursor(cursor, int, int, str)
            after = (int(key[0]), int(key[1]), str(key[2]))
        page = await reads.run(history().entries, scan_id, from_ns, to_ns, after, limit)
        rows = page.rows.to_pylist()
        events = [
            {
                "time": iso(r["asof_ns"]),
                "session": r["session"].isoformat(),
                "seq": r["seq"],
                "symbol": r["symbol"],
                "event": "enter" if r["entered"] else "exit",
                "rank": r["rank"],
            }
            for r in rows
        ]
        last = rows[-1] if rows else None
        return {
            "scan": scan_id,
            "from": ns_to_utc(from_ns).isoformat(),
            "to": ns_to_utc(to_ns).isoformat(),
            "events": events,
            "next_cursor": (
                encode_cursor([last["asof_ns"], last["seq"], last["symbol"]])
                if page.more and last
                else None
            ),
        }

    @router.get("/symbols/{symbol}/bars", responses=examples.BARS)
    async def symbol_bars(
        symbol: str,
        interval: Annotated[Literal["1m", "1d"], Query(description="1m or 1d.")] = "1m",
        start: Annotated[str | None, Query(alias="from", description="Instant or date.")] = None,
        end: Annotated[str | None, Query(alias="to", description="Instant or date.")] = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Minute bars (default: today from 04:00 ET) or daily bars (default: all), oldest first."""
        symbol = symbol.upper()
        if not known(symbol):
            raise ApiError(404, "unknown_symbol", f"'{symbol}' is not in the universe")
        now = now_ns()
        if interval == "1d":
            first = parse_date(start, "from") if start else dt.date(1970, 1, 1)
            last_day = (
                parse_date(end, "to") if end else calendar.trading_day(now) + dt.timedelta(days=1)
            )
            after_day = cursor_time(cursor, dt.date.fromisoformat) if cursor else None
            page = await reads.run(history().daily_bars, symbol, first, last_day, after_day, limit)
            rows = page.rows.to_pylist()
            bars = [
                {
                    "date": r["date"].isoformat(),
                    "open": _float(r["open"]),
                    "high": _float(r["high"]),
                    "low": _float(r["low"]),
                    "close": _float(r["close"]),
                    "volume": r["volume"],
                }
                for r in rows
            ]
            following = encode_cursor([bars[-1]["date"]]) if page.more and bars else None
            return {"symbol": symbol, "interval": interval, "bars": bars, "next_cursor": following}
        start_at = (
            parse_instant(start, "from")
            if start
            else ns_to_utc(calendar.session(calendar.trading_day(now)).pre_open_ns)
        )
        end_at = parse_instant(end, "to") if end else ns_to_utc(now) + dt.timedelta(minutes=1)
        after = cursor_time(cursor, _aware_instant) if cursor else None
        minute_page = await reads.run(history().minute_bars, symbol, start_at, end_at, after, limit)
        minute_rows = minute_page.rows.to_pylist()
        minute_bars = [
            {
                "t": r["ts"].isoformat(),
                "open": r["open"],
                "high": r["high"],
                "low": r["low"],
                "close": r["close"],
                "volume": r["volume"],
                "vwap": r["vwap"],
                "trades": r["trades"],
            }
            for r in minute_rows
        ]
        following = (
            encode_cursor([minute_bars[-1]["t"]]) if minute_page.more and minute_bars else None
        )
        return {
            "symbol": symbol,
            "interval": interval,
            "bars": minute_bars,
            "next_cursor": following,
        }

    return router
