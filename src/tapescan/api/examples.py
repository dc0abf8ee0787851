"""Examples shown in the OpenAPI document (/openapi.json, /docs) for every endpoint."""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]


def example(status: int, body: Any, description: str = "") -> Responses:
    content = {"application/json": {"example": body}}
    return {status: {"description": description or "OK", "content": content}}


def error(status: int, code: str, message: str) -> Responses:
    return example(status, {"error": code, "message": message}, message)


def merged(*parts: Responses) -> Responses:
    out: Responses = {}
    for part in parts:
        out.update(part)
    return out


CURSOR = "eyJrIjogWzEwMF19"
SCAN_DEFINITION = {
    "id": "gappers_up",
    "title": "Gappers up",
    "filters": [
        {"field": "gap_pct", "op": ">=", "value": 4},
        {"field": "price", "op": "between", "value": [1, 50]},
        {"field": "volume", "op": ">=", "value": 50000},
    ],
    "sort": {"field": "gap_pct", "descending": True},
    "limit": 50,
    "columns": ["symbol", "price", "gap_pct", "change_pct", "volume", "rvol"],
    "phases": ["pre", "regular"],
}
SESSION = example(
    200,
    {
        "date": "2026-11-24",
        "phase": "regular",
        "now": "2026-11-24T15:02:11.000Z",
        "early_close": False,
        "pre_open": "2026-11-24T09:00:00.000Z",
        "regular_open": "2026-11-24T14:30:00.000Z",
        "regular_close": "2026-11-24T21:00:00.000Z",
        "post_close": "2026-11-25T01:00:00.000Z",
    },
)
SCANS = example(200, {"items": [SCAN_DEFINITION], "next_cursor": CURSOR})
COLUMNS = example(
    200,
    {
        "items": [{"name": "gap_pct", "kind": "percent", "description": "open vs previous close"}],
        "next_cursor": None,
    },
)
SCAN = merged(
    example(200, SCAN_DEFINITION),
    error(404, "unknown_scan", "no scan 'nope'; GET /api/v1/scans lists them"),
)
RESULTS = merged(
    example(
        200,
        {
            "scan": "gappers_up",
            "seq": 1842,
            "asof": "2026-11-24T14:45:00.000Z",
            "columns": ["symbol", "price", "gap_pct", "change_pct", "volume", "rvol"],
            "rows": [["KWAT", 12.19, 9.21, 11.4, 1130670, 6.2]],
            "next_cursor": None,
        },
        "The current result, or with `at` the result as published at that instant.",
    ),
    error(400, "bad_instant", "at='yesterday' is not ISO 8601, e.g. 2026-11-24T09:45:00-05:00"),
    error(
        404,
        "no_history",
        "no history of scan 'gappers_up' at 2020-01-02T15:00:00Z; recorded from "
        "2026-11-20T09:00:01Z to 2026-11-24T15:02:11Z",
    ),
)
EVENTS = merged(
    example(
        200,
        {
            "scan": "gappers_up",
            "from": "2026-11-24T09:00:00+00:00",
            "to": "2026-11-24T15:00:00+00:00",
            "events": [
                {
                    "time": "2026-11-24T14:31:05.000Z",
                    "session": "2026-11-24",
                    "seq": 901,
                    "symbol": "KWAT",
                    "event": "enter",
                    "rank": 3,
                }
            ],
            "next_cursor": CURSOR,
        },
    ),
    error(400, "bad_cursor", "cursor is not one this server gave; start without it"),
)
SYMBOL = merged(
    example(
        200,
        {
            "symbol": "KWAT",
            "asof": "2026-11-24T15:02:11.000Z",
            "values": {"symbol": "KWAT", "price": 12.19, "gap_pct": 9.2148, "rvol": None},
        },
        "Every column of docs/indicators.md; null when unknown.",
    ),
    error(404, "unknown_symbol", "'NOPE1' is not in the universe of 11882 symbols"),
)
BARS = merged(
    example(
        200,
        {
            "symbol": "KWAT",
            "interval": "1m",
            "bars": [
                {
                    "t": "2026-11-24T14:30:00+00:00",
                    "open": 12.01,
                    "high": 12.2,
                    "low": 11.98,
                    "close": 12.19,
                    "volume": 41200,
                    "vwap": 12.1031,
                    "trades": 188,
                }
            ],
            "next_cursor": CURSOR,
        },
        "Oldest first; follow next_cursor for the rest of the range.",
    ),
    error(422, "invalid_request", "query.interval: Input should be '1m' or '1d'"),
)
ADMIN_ERRORS = merged(
    error(401, "unauthorized", "send 'Authorization: Bearer <TAPESCAN_ADMIN_TOKEN>'"),
    error(403, "forbidden", "the admin token is wrong"),
)
CREATED = merged(example(201, SCAN_DEFINITION), ADMIN_ERRORS)
SCAN_BODY_EXAMPLES = {
    "gappers": {"summary": "Gappers between $1 and $50", "value": SCAN_DEFINITION},
}
