"""Reference details of every ticker: market cap, shares outstanding and sector, from
``GET /v3/reference/tickers/{ticker}`` (a request per ticker, ``REQUEST_THREADS`` in flight:
~75 s at 11,882 tickers), once a day; the store keeps them with the day they were taken, and a
later start that day reads them back instead.

Massive's ticker details have no float: ``float_shares`` stays null on this feed, and a scan that
filters on it lists nothing. ``share_class_shares_outstanding`` (this class's shares) is taken
as shares outstanding, else ``weighted_shares_outstanding``; ``sic_description`` as the sector.
A ticker whose request fails keeps its listing's name and exchange and no details.
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
    failed = 0

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
            try:
                values = details_row(future.result())
            except MassiveRestError as error:  # this ticker only (a 404, retries used up)
                failed += 1
                if failed <= 3:
                    log.warning("no reference details for %s: %s", symbols[row], error)
                values = details_row({})
            symbol = symbols[row]
            values["name"] = values["name"] or names.get(symbol) or None
            values["exchange"] = values["exchange"] or exchanges.get(symbol) or None
            found.append({"symbol": symbol, **values})
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
    for values in found:
        values["updated"] = day
    return pa.Table.from_pylist(found, schema=SYMBOLS.schema)
