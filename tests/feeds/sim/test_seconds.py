import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.feeds.sim.seconds import split_minute
from tapescan.model import AggregateKind

MINUTE_NS = 1_795_770_000_000_000_000


@st.composite
def minute_bars(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    low = np.round(rng.uniform(1, 50, n), 2)
    high = np.round(low * rng.uniform(1.0, 1.1, n), 2)
    open_ = np.round(rng.uniform(low, high), 2)
    close = np.round(rng.uniform(low, high), 2)
    volume = rng.integers(1, 100_000, n)
    trades = np.minimum(rng.integers(1, 500, n), volume)
    return {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "vwap": np.round((open_ + high + low + close) / 4, 4),
        "volume": volume,
        "trades": trades,
        "seed": np.array([draw(st.integers(0, 1000))]),
    }


@settings(max_examples=60, deadline=None)
@given(minute_bars())
def test_seconds_add_up_exactly_to_their_minute(bars: dict[str, np.ndarray]) -> None:
    n = len(bars["open"])
    symbols = np.arange(n, dtype=np.int32)
    batches = split_minute(
        MINUTE_NS,
        symbols,
        bars["open"],
        bars["high"],
        bars["low"],
        bars["close"],
        bars["vwap"],
        bars["volume"],
        bars["trades"],
        np.random.default_rng(int(bars["seed"][0])),
    )
    rows: dict[str, list[float]] = {
        name: []
        for name in ("symbol", "start", "open", "high", "low", "close", "volume", "vwap", "trades")
    }
    for batch in batches:
        assert batch.kind is AggregateKind.SECOND
        assert len(set(batch.start_ns.tolist())) == 1
        rows["symbol"].extend(batch.symbol_index.tolist())
        rows["start"].extend(batch.start_ns.tolist())
        for name in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            rows[name].extend(getattr(batch, name).tolist())
    starts = np.array(rows["start"])
    assert (np.diff(starts) >= 0).all()
    assert starts.min() >= MINUTE_NS
    assert starts.max() < MINUTE_NS + 60 * 10**9
    symbol = np.array(rows["symbol"])
    for s in range(n):
        mine = symbol == s
        first, last = np.flatnonzero(mine)[0], np.flatnonzero(mine)[-1]
        assert rows["open"][first] == bars["open"][s]
        assert rows["close"][last] == bars["close"][s]
        assert max(np.array(rows["high"])[mine]) == bars["high"][s]
        assert min(np.array(rows["low"])[mine]) == bars["low"][s]
        assert np.array(rows["volume"])[mine].sum() == bars["volume"][s]
        assert np.array(rows["trades"])[mine].sum() == bars["trades"][s]
        assert (np.array(rows["volume"])[mine] >= 1).all()
        dollars = (np.array(rows["vwap"])[mine] * np.array(rows["volume"])[mine]).sum()
        assert np.isclose(dollars, bars["vwap"][s] * bars["volume"][s], rtol=1e-12)
        highs, lows = np.array(rows["high"])[mine], np.array(rows["low"])[mine]
        opens, closes = np.array(rows["open"])[mine], np.array(rows["close"])[mine]
        assert (lows <= np.minimum(opens, closes)).all()
        assert (highs >= np.maximum(opens, closes)).all()
        assert (bars["low"][s] <= lows).all()
        assert (highs <= bars["high"][s]).all()
