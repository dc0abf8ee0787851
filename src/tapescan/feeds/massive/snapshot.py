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
magnitude, as everywhere in this adapter (``parse.to_ms``).

Memory: the answer (~10 MB of JSON at ~12,000 tickers) is decoded into the few fields named
here (~100 B a ticker), never into Python dicts whole.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

from tapescan.feeds.massive.parse import to_ms
from tapescan.feeds.massive.rest import MassiveRest
from tapescan.model import NS_PER_MINUTE, Universe

SNAPSHOT_PATH = "/v2/snapshot/locale/us/markets/stocks/tickers"
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


MS_PER_MINUTE = 60_000


def active_rows(rest: MassiveRest, universe: Universe, since_ns: int) -> npt.NDArray[np.intp]:
    """Universe rows (in order) of the tickers that may have traded since ``since_ns``: those the
    snapshot shows active since a minute before, and those it does not show. Raises
    ``MassiveRestError`` when the snapshot cannot be had (the caller asks every ticker)."""
    body = rest.get_as(SNAPSHOT_PATH, {"include_otc": "false"}, _decoder)
    rows: list[int] = []
    shown: list[tuple[float | None, float | None, float | None]] = []
    for item in body.tickers or ():
        row = universe.index_of(item.ticker)
        if row >= 0:
            rows.append(row)
            trade = None if item.lastTrade is None else item.lastTrade.t
            shown.append((item.updated, trade, None if item.min is None else item.min.t))
    latest = np.full(len(universe), -1.0)  # ms; -1: not shown
    uncertain = np.zeros(len(universe), dtype=np.bool_)  # shown without an instant
    if rows:
        # each ticker's latest instant: its update, its last trade, the end of its minute bar
        instants = np.array(shown, dtype=np.float64).reshape(-1, 3)  # None: NaN
        ms = to_ms(instants.ravel()).reshape(-1, 3)
        ms[:, 2] += MS_PER_MINUTE
        last = np.fmax.reduce(ms, axis=1)  # NaN: no instant at all
        at = np.array(rows, dtype=np.intp)
        none = np.isnan(last)
        uncertain[at[none]] = True
        np.maximum.at(latest, at[~none], last[~none])  # a ticker shown twice: its latest
    since_ms = (since_ns - MARGIN_NS) / 1_000_000
    quiet = ~uncertain & (latest >= 0) & (latest < since_ms)
    return np.flatnonzero(~quiet)
