"""Reference details of every ticker: market cap, shares outstanding and sector, from
``GET /v3/reference/tickers/{ticker}`` (a request per ticker, ``REQUEST_THREADS`` in flight:
~75 s at 11,882 tickers), and the free float of all of them from ``GET /stocks/vX/float`` (a
listing, 5,000 a page: 3 requests), once a day; the store keeps them with the day they were
taken, and a later start that day reads them back instead.

``share_class_shares_outstanding`` (this class's shares) is taken as shares outstanding, else
``weighted_shares_outstanding``; ``sic_description`` as the sector; ``free_float`` (shares
freely tradable: insiders, 5% holders and locked-up shares left out) as the float. A ticker
whose request fails keeps its listing's name and exchange and no details, and is not marked as
taken (a later start asks again); after ``FAILURES_IN_A_ROW_MAX`` failures in a row (REST down:
each took its retries) the rest are not asked. The float endpoint is experimental at Massive and
not on every plan: refused (401/403) or failing, the floats stay null, with a warning, and the
rest of the details are kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from tapescan.feeds.massive.client import MassiveFatalError
from tapescan.feeds.massive.rest import (
    MassiveRest,
    MassiveRestError,
    RestInterruptedError,
    in_order,
)
from tapescan.model import Universe
from tapescan.store.tables import SYMBOLS

log = logging.getLogger(__name__)
PROGRESS_EVERY = 100
COMPLETE_SHARE = 0.9  # stored details of at least this share of the universe are today's
FAILURES_IN_A_ROW_MAX = 50  # then REST is down: the rest keep their listing, asked next start


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def details_row(body: dict[str, Any]) -> dict[str, Any]:
    """The SYMBOLS columns one ticker-details answer gives (each None when missing or wrong)."""
    results = body.get("results")
    item: dict[str, Any] = results if isinstance(results, dict) else {}
    shares = _positive(item.get("share_class_shares_outstanding"))
    return {
        "name": _text(item.get("name")),
        "exchange": _text(item.get("primary_exchange")),
        "sector": _text(item.get("sic_description")),
        "float_shares": None,  # not in Massive's ticker details: from the float listing
        "shares_outstanding": shares or _positive(item.get("weighted_shares_outstanding")),
        "market_cap": _positive(item.get("market_cap")),
    }


FLOAT_PATH = "/stocks/vX/float"
FLOAT_PAGE = 5_000  # the endpoint's maximum


def free_floats(rest: MassiveRest) -> dict[str, float]:
    """Every ticker's free float (shares) from the float listing, followed page by page; an
    entry with no positive ``free_float`` is left out."""
    floats: dict[str, float] = {}
    for page in rest.pages(FLOAT_PATH, {"limit": str(FLOAT_PAGE), "sort": "ticker.asc"}):
        results = page.get("results")
        for item in results if isinstance(results, list) else ():
            if not isinstance(item, dict):
                continue
            ticker, shares = _text(item.get("ticker")), _positive(item.get("free_float"))
            if ticker is not None and shares is not None:
                floats[ticker] = shares
    return floats


def with_floats(rest: MassiveRest, details: pa.Table) -> pa.Table:
    """``details`` (SYMBOLS rows) with ``float_shares`` from the float listing; unchanged, with
    a warning, when the listing is refused or fails (the plan may not include it)."""
    try:
        floats = free_floats(rest)
    except RestInterruptedError:
        raise  # a stop request: the warm-up ends
    except (MassiveRestError, MassiveFatalError) as error:
        log.warning("no free floats (float_shares stays null): %s", error)
        return details
    symbols = details.column("symbol").to_pylist()
    column = pa.array([floats.get(symbol) for symbol in symbols], pa.float64())
    at = details.schema.get_field_index("float_shares")
    return details.set_column(at, SYMBOLS.schema.field("float_shares"), column)


def ticker_details(
    rest: MassiveRest,
    pool: ThreadPoolExecutor,
    universe: Universe,
    listing: pa.Table,
    day: dt.date,
    threads: int,
    on_step: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """SYMBOLS rows of every ticker of ``universe`` (the listing's name and exchange where the
    details have none), stamped ``updated = day``; requests in universe order."""
    symbols = universe.symbols
    listed = listing.column("symbol").to_pylist()
    names = dict(zip(listed, listing.column("name").to_pylist(), strict=True))
    exchanges = dict(zip(listed, listing.column("exchange").to_pylist(), strict=True))
    found: list[dict[str, Any]] = []
    failed = in_a_row = 0

    def fetch(row: int) -> dict[str, Any]:
        path = f"/v3/reference/tickers/{quote(symbols[row], safe='')}"
        return rest.get(path, {"date": day.isoformat()})

    if on_step is not None:
        on_step(0, len(symbols))
    ordered = in_order(pool, range(len(symbols)), fetch, threads * 4)
    with contextlib.closing(ordered) as answers:
        for done, (row, answer) in enumerate(answers, start=1):
            taken: dt.date | None = day
            try:
                values = details_row(answer.result())
                in_a_row = 0
            except MassiveRestError as error:  # this ticker only (a 404, retries used up)
                failed += 1
                in_a_row += 1
                if failed <= 3:
                    log.warning("no reference details for %s: %s", symbols[row], error)
                values, taken = details_row({}), None  # not taken: a later start asks again
            symbol = symbols[row]
            values["name"] = values["name"] or names.get(symbol) or None
            values["exchange"] = values["exchange"] or exchanges.get(symbol) or None
            found.append({"symbol": symbol, **values, "updated": taken})
            if in_a_row >= FAILURES_IN_A_ROW_MAX:
                log.warning(
                    "reference details: %d requests in a row failed; the other tickers keep "
                    "their listing until the next start",
                    in_a_row,
                )
                break
            if on_step is not None and (done % PROGRESS_EVERY == 0 or done == len(symbols)):
                on_step(done, len(symbols))  # where a stop request ends the warm-up
    if failed:
        log.warning("reference details: %d of %d tickers failed", failed, len(symbols))
    asked = {values["symbol"] for values in found}
    for symbol in symbols:  # not asked (REST down): the listing's
        if symbol not in asked:
            found.append(
                {
                    "symbol": symbol,
                    **details_row({}),
                    "name": names.get(symbol),
                    "exchange": exchanges.get(symbol),
                    "updated": None,
                }
            )
    return pa.Table.from_pylist(found, schema=SYMBOLS.schema)
