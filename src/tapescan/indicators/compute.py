"""All numeric columns of the catalog, computed from MarketState for every symbol at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapescan.indicators.volume import (
    expected_minute_volume,
    expected_volume,
    ratio_or_null,
    slot_position,
)
from tapescan.market.calendar import Phase
from tapescan.state.market_state import MarketState

FloatArray = npt.NDArray[np.float64]
Columns = dict[str, FloatArray]


def percent_change(value: FloatArray, base: FloatArray) -> FloatArray:
    """(value - base) / base x 100, NaN where either is unknown or base is not positive."""
    usable = base > 0
    return np.where(usable, (value - base) / np.where(usable, base, 1.0) * 100.0, np.nan)


def compute_columns(state: MarketState) -> Columns:
    """The columns at the state's instant: arrays of their own (copies where a column is a
    state array as it is), so applying later events never changes a cycle's columns."""
    now = state.now_ns
    phase = state.times.phase_at(now)
    after_open = now >= state.times.regular_open_ns
    banded = phase is Phase.REGULAR  # LULD bands apply 09:30-16:00 ET only
    price, prev_close = state.price, state.prev_close

    change = percent_change(price, prev_close)
    gap = percent_change(state.open, prev_close) if after_open else change
    from_open = percent_change(price, state.open) if after_open else np.full_like(price, np.nan)
    post_change = (
        percent_change(price, state.close) if phase is Phase.POST else np.full_like(price, np.nan)
    )
    traded = state.volume > 0
    vwap = np.where(traded, state.dollar_volume / np.where(traded, state.volume, 1), np.nan)
    atr = state.atr_state.atr
    # Null until the symbol trades today (and when there is no previous close).
    span = np.maximum(state.hod, prev_close) - np.minimum(state.lod, prev_close)
    with np.errstate(invalid="ignore"):
        reversal = -np.sign(gap) * from_open
        reversal = np.where(gap == 0, np.nan, reversal)

    elapsed = now - state.times.pre_open_ns
    history = state.rvol_history
    if history.complete:
        slot, fraction = slot_position(elapsed)
        bounds = history.baseline(slot)
        expected = expected_volume(bounds, fraction)
        rvol = ratio_or_null(
            state.volume.astype(np.float64), expected, state.limits.rvol_min_expected
        )
        minute_expected = expected_minute_volume(bounds)
        spike = ratio_or_null(
            state.volume_1m.astype(np.float64), minute_expected, state.limits.vol_spike_min_expected
        )
    else:
        rvol = spike = np.full_like(price, np.nan)

    return {
        "price": price.copy(),
        "prev_close": prev_close.copy(),
        "change_pct": change,
        "abs_change_pct": np.abs(change),
        "gap_pct": gap,
        "abs_gap_pct": np.abs(gap),
        "open": state.open.copy(),
        "change_from_open_pct": from_open,
        "reversal_pct": reversal,
        "close": state.close.copy(),
        "post_change_pct": post_change,
        "abs_post_change_pct": np.abs(post_change),
        "volume": state.volume.astype(np.float64),
        "dollar_volume": state.dollar_volume.copy(),
        "vwap": vwap,
        "from_vwap_pct": percent_change(price, vwap),
        "hod": state.hod.copy(),
        "lod": state.lod.copy(),
        "from_hod_pct": percent_change(price, state.hod),
        "from_lod_pct": percent_change(price, state.lod),
        "pm_high": state.pm_high.copy(),
        "pm_low": state.pm_low.copy(),
        "atr": atr.copy(),
        "atr_pct": np.where(
            prev_close > 0, atr / np.where(prev_close > 0, prev_close, 1.0) * 100, np.nan
        ),
        "range_atr_pct": np.where(atr > 0, span / np.where(atr > 0, atr, 1.0) * 100, np.nan),
        "rvol": rvol,
        "chg_1m_pct": percent_change(price, state.price_minutes_ago(1)),
        "chg_5m_pct": percent_change(price, state.price_minutes_ago(5)),
        "chg_15m_pct": percent_change(price, state.price_minutes_ago(15)),
        "vol_1m": state.volume_1m.astype(np.float64),
        "vol_spike": spike,
        "avg_volume_20d": state.avg_volume_20d.copy(),
        "float_shares": state.float_shares.copy(),
        "market_cap": state.market_cap.copy(),
        "halted": state.halted.astype(np.float64),
        "luld_upper": state.luld_upper.copy() if banded else np.full_like(price, np.nan),
        "luld_lower": state.luld_lower.copy() if banded else np.full_like(price, np.nan),
    }
