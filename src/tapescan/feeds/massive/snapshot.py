"""The full-market snapshot: which tickers have traded since an instant, in one request.

``GET /v2/snapshot/locale/us/markets/stocks/tickers`` answers every ticker's state now: its
``updated`` instant (ns), its latest minute bar (``min``, start in ms) and, on plans with trades,
its last trade (``lastTrade.t``, ns). A gap's backfill asks it first and then requests the minute
aggregates of only the tickers active since the gap began (``active_rows``): a ticker that has
not traded since then has no bar in the gap. After hours or early in the pre-market most of the
~12,000 listed tickers are quiet, and the requests drop with them.

What is not certain is taken the safe way: a ticker the snapshot does not list, or lists with
no usable instant, is requested; a snapshot that fails or has the wrong shape (after its
retries) means every ticker is requested, as without it. Instants in any unit are told apart by
magnitude, as everywhere in this adapter.

Memory: the answer (~10 MB of JSON at ~12,000 tickers) is decoded into the few fields named
here (~100 B a ticker), never into Python dicts whole.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

from tapescan.feeds.massive.rest import MassiveRest
from tapescan.model import NS_PER_MINUTE, Universe

SNAPSHOT_PATH = "/v2/snapshot/locale/us/markets/stocks/tickers"
NS_MIN = 10**18  # 2001-09-09 in ns: an instant below this is in a coarser unit
MARGIN_NS = NS_PER_MINUTE  # a ticker active within a minute before the gap is asked too


class _Minute(msgspec.Struct):
    t: float | None = None  # the minute's start (ms, per Massive)


class _Trade(msgspec.Struct):
    t: float | None = None  # ns, per Massive


class _Ticker(msgspec.Struct):
    ticker: str = ""
    updated: float | None = None  # ns, per Massive
    min: _Minute | None = None
    lastTrade: _Trade | None = None  # noqa: N815 - the protocol's name


class _Snapshot(msgspec.Struct):
    status: str | None = None
    error: str | None = None
    tickers: list[_Ticker] | None = None


_decoder = msgspec.json.Decoder(_Snapshot)


def to_ns(value: float | None) -> int | None:
    """An instant in s, ms, µs or ns, in ns (None: missing, zero or no unit fits)."""
    if value is None or not value > 0:
        return None
    for scale in (1, 1_000, 1_000_000, 1_000_000_000):  # ns, µs, ms, s
        scaled = value * scale
        if NS_MIN <= scaled < NS_MIN * 10:
            return int(scaled)
    return None


def last_active_ns(item: _Ticker) -> int | None:
    """The latest instant the snapshot shows for a ticker: its update, its last trade, or the
    end of its latest minute bar; None when it shows none."""
    instants = [to_ns(item.updated)]
    if item.lastTrade is not None:
        instants.append(to_ns(item.lastTrade.t))
    if item.min is not None:
        start = to_ns(item.min.t)
        instants.append(None if start is None else start + NS_PER_MINUTE)
    known = [value for value in instants if value is not None]
    return max(known) if known else None


def active_rows(rest: MassiveRest, universe: Universe, since_ns: int) -> npt.NDArray[np.intp]:
    """Universe rows (in order) of the tickers that may have traded since ``since_ns``: those the
    snapshot shows active since a minute before, and those it does not show. Raises
    ``MassiveRestError`` when the snapshot cannot be had (the caller asks every ticker)."""
    body = rest.get_as(SNAPSHOT_PATH, {"include_otc": "false"}, _decoder)
    latest = np.full(len(universe), -1, dtype=np.int64)  # -1: not shown
    uncertain = np.zeros(len(universe), dtype=np.bool_)  # shown without an instant
    for item in body.tickers or ():
        row = universe.index_of(item.ticker)
        if row < 0:
            continue
        last = last_active_ns(item)
        if last is None:
            uncertain[row] = True
        else:  # a ticker shown twice: its latest instant counts
            latest[row] = max(int(latest[row]), last)
    quiet = ~uncertain & (latest >= 0) & (latest < since_ns - MARGIN_NS)
    return np.flatnonzero(~quiet)
