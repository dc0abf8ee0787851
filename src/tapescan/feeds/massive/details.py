"""Reference details of every ticker: market cap, shares outstanding and sector, from
``GET /v3/reference/tickers/{ticker}`` (a request per ticker, ``REQUEST_THREADS`` in flight:
~75 s at 11,882 tickers), once a day; the store keeps them with the day they were taken, and a
later start that day reads them back instead.

Massive's ticker details have no float: ``float_shares`` stays null on this feed, and a scan that
filters on it lists nothing. ``share_class_shares_outstanding`` (this class's shares) is taken
as shares outstanding, else ``weighted_shares_outstanding``; ``sic_description`` as the sector.
A ticker whose request fails keeps its listing's name and exchange and no details, and is not
marked as taken (a later start asks again); after ``FAILURES_IN_A_ROW_MAX`` failures in a row
(REST down: each took its retries) the rest are not asked.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from tapescan.feeds.massive.rest import MassiveRest, MassiveRestError
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
        "float_shares": None,  # not in Massive's ticker details
        "shares_outstanding": shares or _positive(item.get("weighted_shares_outstanding")),
        "market_cap": _positive(item.get("market_cap")),
    }


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
    rows = iter(range(len(symbols)))
    pending: deque[tuple[int, Future[dict[str, Any]]]] = deque()
    found: list[dict[str, Any]] = []
    failed = in_a_row = 0

    def submit(row: int) -> None:
        path = f"/v3/reference/tickers/{quote(symbols[row], safe='')}"
        pending.append((row, pool.submit(rest.get, path, {"date": day.isoformat()})))

    for row in itertools.islice(rows, threads * 4):
        submit(row)
    done = 0
    if on_step is not None:
        on_step(0, len(symbols))
    try:
        while pending:
            row, future = pending.popleft()
            taken: dt.date | None = day
            try:
                values = details_row(future.result())
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
            following = next(rows, None)
            if following is not None:
                submit(following)
            done += 1
            if on_step is not None and (done % PROGRESS_EVERY == 0 or done == len(symbols)):
                on_step(done, len(symbols))  # where a stop request ends the warm-up
    finally:
        for _, future in pending:
            future.cancel()
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
