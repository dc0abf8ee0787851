"""The compact archive layout of minute bars: prices as whole 10,000ths, each predicted from
the prices before it.

Prices that follow each other are close: a bar opens a tick or two from the previous bar's
close, closes a few ticks from its open, its high is a few ticks above the higher of the two, its
low below the lower, its VWAP near the typical price. Stored as those differences (integers,
mostly small) instead of five unrelated doubles, a simulated day's 5.2M bars take 24 MB instead
of 58 MB. The rows stay in key order (session, symbol, time); the close is a running sum within
the session and symbol, so DuckDB turns the file back into the plain columns with one window
sum and arithmetic (``sql_select``), and pushes a filter on the symbol into the file read: any
query over the archive reads it as if it were plain.

``encode`` checks that ``decode`` gives back every value bit for bit (a price that is not a whole
number of 10,000ths, a VWAP outside whole 40,000ths, a NaN, ...) and raises ``NotCompactError``
otherwise; the archive then keeps the session in the plain layout.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.store.codecs import NotCompactError, running_sums
from tapescan.store.tables import MINUTE_BARS, conform

LAYOUT = "minute-bars-ticks-1"
SCALE = 10_000
_LIMIT = 2**52  # scaled values stay exact in a double

COMPACT_SCHEMA = pa.schema(
    [
        ("session", pa.date32()),
        ("symbol", pa.string()),
        ("ts", MINUTE_BARS.schema.field("ts").type),
        ("open", pa.int64()),  # open - previous close of the symbol that session (first: open)
        ("close", pa.int64()),  # close - open
        ("high", pa.int64()),  # high - max(open, close)
        ("low", pa.int64()),  # min(open, close) - low
        ("volume", pa.int64()),
        ("vwap", pa.int64()),  # 4 x vwap - (open + high + low + close), in 10,000ths
        ("trades", pa.int64()),
    ]
)


def sql_select(source: str) -> str:
    """A query over compact files (``source``, e.g. ``read_parquet([...])``) with the plain
    columns of ``minute_bars``; prices come back as the same doubles (whole 10,000ths divided
    as doubles)."""
    c = "_close"
    o = f"({c} - close)"
    h = f"(greatest({o}, {c}) + high)"
    lo = f"(least({o}, {c}) - low)"
    return (
        f"SELECT session, symbol, ts, {o} / {SCALE}::DOUBLE AS open, "
        f"{h} / {SCALE}::DOUBLE AS high, {lo} / {SCALE}::DOUBLE AS low, "
        f"{c} / {SCALE}::DOUBLE AS close, volume, "
        f"({o} + {h} + {lo} + {c} + vwap) / {4 * SCALE}::DOUBLE AS vwap, trades "
        f"FROM (SELECT *, sum(open + close) OVER (PARTITION BY session, symbol ORDER BY ts "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {c} FROM {source})"
    )


Ints = npt.NDArray[np.int64]


def _scaled(name: str, values: pa.ChunkedArray, factor: int) -> tuple[Ints, npt.NDArray[np.bool_]]:
    """Whole ``1/factor`` units of a float column, and where it is null."""
    missing = np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=np.bool_)
    floats = np.asarray(values.fill_null(0.0).to_numpy(), dtype=np.float64)
    if not np.isfinite(floats).all():
        raise NotCompactError(f"minute bars: {name} holds a NaN or an infinity")
    scaled = np.rint(floats * factor)
    if (np.abs(scaled) >= _LIMIT).any():
        raise NotCompactError(f"minute bars: {name} is too large for whole 1/{factor}")
    return scaled.astype(np.int64), missing


def _group_starts(table: pa.Table) -> npt.NDArray[np.bool_]:
    """True at the first row of each (session, symbol) run; rows must be in key order."""
    n = table.num_rows
    starts = np.ones(n, dtype=np.bool_)
    if n > 1:
        same = np.ones(n - 1, dtype=np.bool_)
        for name in ("session", "symbol"):
            column = table.column(name).combine_chunks()
            differs = pc.not_equal(column.slice(1), column.slice(0, n - 1)).fill_null(True)
            same &= ~np.asarray(differs.to_numpy(zero_copy_only=False), dtype=np.bool_)
        starts[1:] = ~same
    return starts


def encode(bars: pa.Table) -> pa.Table:
    """The compact form of ``minute_bars`` rows in key order; raises NotCompactError."""
    bars = conform(MINUTE_BARS, bars)
    o, o_null = _scaled("open", bars.column("open"), SCALE)
    h, h_null = _scaled("high", bars.column("high"), SCALE)
    lo, l_null = _scaled("low", bars.column("low"), SCALE)
    c, c_null = _scaled("close", bars.column("close"), SCALE)
    w, w_null = _scaled("vwap", bars.column("vwap"), 4 * SCALE)
    if (o_null | h_null | l_null | c_null).any():
        raise NotCompactError("minute bars: a bar without all of open, high, low and close")
    starts = _group_starts(bars)
    ts = np.asarray(bars.column("ts").cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
    if bars.column("ts").null_count or (np.diff(ts)[~starts[1:]] <= 0).any():
        raise NotCompactError("minute bars: rows not in (session, symbol, ts) order")
    previous_close = np.concatenate([[0], c[:-1]]) if len(c) else c
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    compact = pa.Table.from_arrays(
        [
            bars.column("session"),
            bars.column("symbol"),
            bars.column("ts"),
            pa.array(o - np.where(starts, 0, previous_close)),
            pa.array(c - o),
            pa.array(h - top),
            pa.array(bottom - lo),
            bars.column("volume"),
            pa.array(w - (o + h + lo + c), mask=w_null),
            bars.column("trades"),
        ],
        schema=COMPACT_SCHEMA,
    )
    if not decode(compact).equals(bars):
        raise NotCompactError("minute bars: a price is not a whole number of 1/10,000")
    return compact


def decode(compact: pa.Table) -> pa.Table:
    """The plain ``minute_bars`` rows of a compact table (same row order)."""

    def ints(name: str) -> Ints:
        return np.asarray(compact.column(name).fill_null(0).to_numpy(), dtype=np.int64)

    c = running_sums(ints("open") + ints("close"), _group_starts(compact))
    o = c - ints("close")
    h = np.maximum(o, c) + ints("high")
    lo = np.minimum(o, c) - ints("low")
    vwap = compact.column("vwap")
    w_null = np.asarray(pc.is_null(vwap).to_numpy(zero_copy_only=False), dtype=np.bool_)
    w = o + h + lo + c + ints("vwap")
    return pa.Table.from_arrays(
        [
            compact.column("session"),
            compact.column("symbol"),
            compact.column("ts"),
            pa.array(o / SCALE),
            pa.array(h / SCALE),
            pa.array(lo / SCALE),
            pa.array(c / SCALE),
            compact.column("volume"),
            pa.array(w / (4 * SCALE), mask=w_null),
            compact.column("trades"),
        ],
        schema=MINUTE_BARS.schema,
    )
