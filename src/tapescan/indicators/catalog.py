"""Every column a scan can filter, sort or show: its kind (for display rounding) and meaning."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    TEXT = "text"  # symbol, exchange, sector, name
    PRICE = "price"  # rounded to the US tick: $0.0001 under $1, $0.01 from $1
    PERCENT = "percent"  # rounded to 0.01
    RATIO = "ratio"  # rounded to 0.01
    COUNT = "count"  # whole numbers (shares, dollars)
    FLAG = "flag"  # true / false


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("symbol", Kind.TEXT, "ticker"),
    Column("name", Kind.TEXT, "company name (reference data)"),
    Column("exchange", Kind.TEXT, "listing exchange MIC (reference data)"),
    Column("sector", Kind.TEXT, "sector (reference data)"),
    Column("price", Kind.PRICE, "last trade price (close of the latest aggregate)"),
    Column("prev_close", Kind.PRICE, "previous session's regular close"),
    Column("change_pct", Kind.PERCENT, "(price - prev_close) / prev_close x 100"),
    Column("abs_change_pct", Kind.PERCENT, "|change_pct|"),
    Column(
        "gap_pct",
        Kind.PERCENT,
        "before the open (price - prev_close) / prev_close x 100; "
        "from the open (open - prev_close) / prev_close x 100",
    ),
    Column("abs_gap_pct", Kind.PERCENT, "|gap_pct|"),
    Column("open", Kind.PRICE, "official regular-session open; null before it"),
    Column(
        "change_from_open_pct", Kind.PERCENT, "(price - open) / open x 100; null before the open"
    ),
    Column(
        "reversal_pct",
        Kind.PERCENT,
        "move from the open against the gap's direction: -sign(gap_pct) x "
        "change_from_open_pct; positive once price is through the open the other way",
    ),
    Column("close", Kind.PRICE, "today's regular-session close; null until the close"),
    Column(
        "post_change_pct",
        Kind.PERCENT,
        "(price - close) / close x 100 in the post-market; null otherwise",
    ),
    Column("abs_post_change_pct", Kind.PERCENT, "|post_change_pct|"),
    Column("volume", Kind.COUNT, "cumulative volume since 04:00 ET"),
    Column("dollar_volume", Kind.COUNT, "sum of vwap x volume of today's aggregates"),
    Column("vwap", Kind.PRICE, "today's volume-weighted average price since 04:00 ET"),
    Column("from_vwap_pct", Kind.PERCENT, "(price - vwap) / vwap x 100"),
    Column("hod", Kind.PRICE, "highest high of every aggregate since 04:00 ET"),
    Column("lod", Kind.PRICE, "lowest low of every aggregate since 04:00 ET"),
    Column("from_hod_pct", Kind.PERCENT, "(price - hod) / hod x 100"),
    Column("from_lod_pct", Kind.PERCENT, "(price - lod) / lod x 100"),
    Column("pm_high", Kind.PRICE, "pre-market high"),
    Column("pm_low", Kind.PRICE, "pre-market low"),
    Column("atr", Kind.PRICE, "Wilder ATR(14) on daily bars up to the previous session"),
    Column("atr_pct", Kind.PERCENT, "atr / prev_close x 100"),
    Column(
        "range_atr_pct", Kind.PERCENT, "(max(hod, prev_close) - min(lod, prev_close)) / atr x 100"
    ),
    Column(
        "rvol", Kind.RATIO, "volume / expected(t), the time-of-day baseline of the last N sessions"
    ),
    Column("chg_1m_pct", Kind.PERCENT, "price versus the price 1 minute ago, %"),
    Column("chg_5m_pct", Kind.PERCENT, "price versus the price 5 minutes ago, %"),
    Column("chg_15m_pct", Kind.PERCENT, "price versus the price 15 minutes ago, %"),
    Column("vol_1m", Kind.COUNT, "volume in the last 60 s"),
    Column("vol_spike", Kind.RATIO, "vol_1m / expected one-minute volume at this time of day"),
    Column("avg_volume_20d", Kind.COUNT, "mean daily volume of the last 20 sessions"),
    Column("float_shares", Kind.COUNT, "float (reference data); null when unknown"),
    Column("market_cap", Kind.COUNT, "market capitalisation (reference data); null when unknown"),
    Column("halted", Kind.FLAG, "true while a halt or LULD pause is in effect"),
    Column("luld_upper", Kind.PRICE, "LULD upper band (limit up), regular hours only"),
    Column("luld_lower", Kind.PRICE, "LULD lower band (limit down), regular hours only"),
)

BY_NAME: dict[str, Column] = {column.name: column for column in COLUMNS}
TEXT_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind is Kind.TEXT)
NUMERIC_COLUMNS = frozenset(c.name for c in COLUMNS if c.kind is not Kind.TEXT)
