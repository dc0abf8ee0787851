"""A local imitation of Massive's REST API: the endpoints tapescan's warm-up uses.

- ``GET /v3/reference/tickers``: the simulated universe in pages (``limit`` up to 1,000), with a
  ``next_url`` on this server whose opaque ``cursor`` carries the rest; the key is not in it.
- ``GET /v3/reference/tickers/{ticker}``: one ticker's details (market cap, shares outstanding,
  sector as ``sic_description``; no float, as Massive's have none: that is the float listing's);
  404 for an unknown one.
- ``GET /stocks/vX/float``: every ticker's free float (the simulated float), in pages of up to
  5,000 with a ``next_url``;
- ``GET /v2/aggs/grouped/locale/us/market/stocks/{date}``: daily bars of every symbol (ticker key
  ``T``); a day without bars answers ``resultsCount: 0`` and no ``results``.
- ``GET /v2/aggs/ticker/{ticker}/range/1/minute/{from}/{to}``: one ticker's minute bars starting
  in [from, to] (dates or Unix ms): a past session's (the fake draws a session whole on its first
  request and keeps that one), or the served session's minutes that have ended;
- ``GET /v2/snapshot/locale/us/markets/stocks/tickers``: every ticker's full-market snapshot
  (``day``, ``min``, ``prevDay``, ``updated`` in ns) from the served session's minutes ended;
- ``GET /v1/marketstatus/now``: no envelope, as the real one; ``serverTime`` is the fake's clock.

The key is accepted as ``Authorization: Bearer`` or ``?apiKey=``; a wrong one gets the real 401
body. Faults, chosen by flags: a 429 (with ``Retry-After``) every N requests, an HTML 504 page
every N requests, a snapshot of the wrong shape, a float listing refused (403).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tapescan.feeds.massive.fake_market import FakeMarket, cursor_of, offset_of
from tapescan.market.calendar import ns_to_et, ns_to_utc
from tapescan.market.clock import Clock

_ET = ZoneInfo("America/New_York")
TICKERS_LIMIT_MAX = 1_000
FLOATS_LIMIT_MAX = 5_000
AGGREGATES_LIMIT_MAX = 50_000


def _bound(value: str, end: bool) -> tuple[dt.date, int]:
    """A ``from``/``to`` path part, YYYY-MM-DD (the whole ET day) or Unix milliseconds: its ET
    date and its instant in ms (a day's first or last millisecond)."""
    if value.isdigit():
        ms = int(value)
        return ns_to_et(ms * 1_000_000).date(), ms
    day = dt.date.fromisoformat(value)
    midnight = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time(), _ET)
    return day, int(midnight.timestamp() * 1000) - (1 if end else 0)


@dataclass(slots=True)
class RestFaults:
    rate_limit_every: int = 0  # every Nth request answers 429 (0: never)
    html_504_every: int = 0  # every Nth request answers an nginx-style HTML 504 (0: never)
    retry_after_s: float = 0.2
    today_delay_s: float = 0.0  # each request for the served session's minutes waits this long
    bad_snapshot: bool = False  # the full-market snapshot answers a body of the wrong shape
    no_float_plan: bool = False  # the float listing answers 403, as to a plan without it


@dataclass(slots=True)
class RestStats:
    requests: int = 0
    rate_limited: int = 0
    failed_504: int = 0
    unauthorized: int = 0


def _envelope(status: str = "OK", **rest: object) -> dict[str, object]:
    return {"status": status, "request_id": secrets.token_hex(16), **rest}


def rest_app(
    market: FakeMarket, api_key: str, clock: Clock, faults: RestFaults | None = None
) -> Starlette:
    chosen = faults or RestFaults()
    stats = RestStats()

    def refused(request: Request) -> Response | None:
        stats.requests += 1
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or request.query_params.get("apiKey", "")
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            stats.unauthorized += 1
            return JSONResponse(_envelope("ERROR", error="Unknown API Key"), status_code=401)
        if chosen.rate_limit_every and stats.requests % chosen.rate_limit_every == 0:
            stats.rate_limited += 1
            return JSONResponse(
                _envelope(
                    "ERROR",
                    error="You've exceeded the maximum requests per minute, please wait or "
                    "upgrade your subscription to continue.",
                ),
                status_code=429,
                headers={"Retry-After": f"{chosen.retry_after_s:g}"},
            )
        if chosen.html_504_every and stats.requests % chosen.html_504_every == 0:
            stats.failed_504 += 1
            return HTMLResponse(
                "<html><head><title>504 Gateway Time-out</title></head><body><center>"
                "<h1>504 Gateway Time-out</h1></center><hr><center>nginx</center></body></html>",
                status_code=504,
            )
        return None

    async def tickers(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        query = request.query_params
        try:
            if "cursor" in query:
                offset, kind = offset_of(query["cursor"])
            else:
                offset, kind = 0, query.get("type", "")
            limit = min(TICKERS_LIMIT_MAX, max(1, int(query.get("limit", "100"))))
        except (ValueError, KeyError, TypeError):
            return JSONResponse(_envelope("ERROR", error="bad cursor or limit"), status_code=400)
        page, following = market.tickers(kind, offset, limit)
        body = _envelope(results=page, count=len(page))
        if following >= 0:
            body["next_url"] = str(
                request.url.replace(query=f"cursor={cursor_of(following, kind)}&limit={limit}")
            )
        return JSONResponse(body)

    async def details(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        found = market.ticker_details(request.path_params["ticker"])
        if found is None:
            return JSONResponse(_envelope("NOT_FOUND", message="Ticker not found."), 404)
        return JSONResponse(_envelope(results=found))

    async def floats(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        if chosen.no_float_plan:
            return JSONResponse(
                _envelope(
                    "NOT_AUTHORIZED",
                    message="You are not entitled to this data. Please upgrade your plan.",
                ),
                status_code=403,
            )
        query = request.query_params
        try:
            offset = offset_of(query["cursor"])[0] if "cursor" in query else 0
            limit = min(FLOATS_LIMIT_MAX, max(1, int(query.get("limit", "100"))))
        except (ValueError, KeyError, TypeError):
            return JSONResponse(_envelope("ERROR", error="bad cursor or limit"), status_code=400)
        page, following = market.floats(offset, limit)
        body = _envelope(results=page)
        if following >= 0:
            body["next_url"] = str(
                request.url.replace(query=f"cursor={cursor_of(following, 'float')}&limit={limit}")
            )
        return JSONResponse(body)

    async def grouped(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            day = dt.date.fromisoformat(request.path_params["date"])
        except ValueError:
            return JSONResponse(_envelope("ERROR", error="bad date"), status_code=400)
        rows = market.grouped_daily(day)
        if not rows:
            return JSONResponse(_envelope(adjusted=True, queryCount=0, resultsCount=0))
        return JSONResponse(
            _envelope(adjusted=True, queryCount=len(rows), resultsCount=len(rows), results=rows)
        )

    def minute_aggregates(request: Request) -> Response:  # sync: Starlette runs it in a thread
        if (answer := refused(request)) is not None:
            return answer
        params = request.path_params
        if params["multiplier"] != "1" or params["timespan"] != "minute":
            return JSONResponse(
                _envelope("ERROR", error="the fake serves 1/minute bars only"), status_code=400
            )
        try:
            (first, from_ms), (last, to_ms) = (
                _bound(params["start"], end=False),
                _bound(params["end"], end=True),
            )
        except ValueError:
            return JSONResponse(_envelope("ERROR", error="bad from or to"), status_code=400)
        ticker = params["ticker"]
        bars: list[dict[str, object]] = []
        day = first
        now_ns = clock.now_ns()
        if chosen.today_delay_s > 0 and first <= market.session <= last:
            time.sleep(chosen.today_delay_s)  # a slow backfill, to be interrupted
        while day <= last and len(bars) < AGGREGATES_LIMIT_MAX:
            bars.extend(market.minute_bars(ticker, day, from_ms, to_ms, now_ns))
            day += dt.timedelta(days=1)
        body = _envelope(ticker=ticker, adjusted=True, queryCount=len(bars), resultsCount=len(bars))
        if bars:
            body["results"] = bars[:AGGREGATES_LIMIT_MAX]
        return JSONResponse(body)

    def snapshot(request: Request) -> Response:  # sync: Starlette runs it in a thread
        if (answer := refused(request)) is not None:
            return answer
        if chosen.bad_snapshot:
            return JSONResponse(_envelope(count=1, tickers="not a list"))
        tickers = market.snapshot(clock.now_ns())
        return JSONResponse(_envelope(count=len(tickers), tickers=tickers))

    async def market_status(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        # the fake's own clock: a client started with --start at this instant runs in step
        now = ns_to_utc(clock.now_ns()).isoformat()
        return JSONResponse({"market": market.status_at(clock.now_ns()), "serverTime": now})

    app = Starlette(
        routes=[
            Route("/v3/reference/tickers", tickers),
            Route("/v3/reference/tickers/{ticker}", details),
            Route("/stocks/vX/float", floats),
            Route("/v2/aggs/grouped/locale/us/market/stocks/{date}", grouped),
            Route(
                "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}",
                minute_aggregates,
            ),
            Route("/v2/snapshot/locale/us/markets/stocks/tickers", snapshot),
            Route("/v1/marketstatus/now", market_status),
        ]
    )
    app.state.stats = stats
    return app
