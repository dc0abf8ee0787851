import numpy as np
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.indicators.atr import WilderAtr


def known_series() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 120)))
    high = close * (1 + np.abs(rng.normal(0, 0.01, 120)))
    low = close * (1 - np.abs(rng.normal(0, 0.01, 120)))
    return high, low, close


def test_atr_of_a_known_series_matches_talib_to_1e_9_at_every_bar() -> None:
    high, low, close = known_series()
    expected = talib.ATR(high, low, close, timeperiod=14)
    atr = WilderAtr(1)
    got = []
    for h, l_, c in zip(high, low, close, strict=True):
        atr.update(np.array([h]), np.array([l_]), np.array([c]), np.array([True]))
        got.append(atr.atr[0])
    assert np.isnan(got[:14]).all()  # defined from the 15th bar: 14 true ranges
    np.testing.assert_allclose(got[14:], expected[14:], rtol=0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=0, max_value=2**31),
)
def test_vectorized_incremental_atr_equals_talib_per_symbol_with_missing_days(
    symbols: int, sessions: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    close = rng.uniform(1, 200, (sessions, symbols))
    high = close * rng.uniform(1.0, 1.1, (sessions, symbols))
    low = close * rng.uniform(0.9, 1.0, (sessions, symbols))
    traded = rng.random((sessions, symbols)) < 0.85
    atr = WilderAtr(symbols)
    for day in range(sessions):
        atr.update(high[day], low[day], close[day], traded[day])
    for s in range(symbols):
        mine = traded[:, s]
        if mine.sum() <= 14:
            assert np.isnan(atr.atr[s])
        else:
            expected = talib.ATR(high[mine, s], low[mine, s], close[mine, s], timeperiod=14)[-1]
            assert abs(atr.atr[s] - expected) <= 1e-9 * max(1.0, abs(expected))
