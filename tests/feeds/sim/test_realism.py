"""The simulated market looks like a US trading day: each property with a numeric bound."""

import numpy as np
import numpy.typing as npt

from tapescan.feeds.sim.generator import SimMarket
from tests.feeds.sim.conftest import REALISM_DAY, SimulatedDay


def forward_filled_close(day: SimulatedDay) -> npt.NDArray[np.float64]:
    """Last traded price at each minute's end (NaN before the first trade)."""
    close = np.where(day.active, day.close, np.nan)
    index = np.where(day.active, np.arange(close.shape[1])[None, :], 0)
    np.maximum.accumulate(index, axis=1, out=index)
    filled = np.take_along_axis(close, index, axis=1)
    return filled


def test_prices_are_log_normal_from_about_50_cents_to_over_1000_dollars_many_under_10(
    realism_day: SimulatedDay,
) -> None:
    price = realism_day.plan.prev_close
    log_price = np.log(price)
    skew = float(((log_price - log_price.mean()) ** 3).mean() / log_price.std() ** 3)
    assert abs(skew) < 0.3  # symmetric in log space
    assert 0.25 <= np.percentile(price, 1) <= 1.0
    assert (price < 0.5).mean() < 0.02
    assert price.max() > 1_000
    assert 0.35 <= (price < 10).mean() <= 0.6


def test_daily_volume_is_heavy_tailed_top_1pct_trade_over_20pct(realism_day: SimulatedDay) -> None:
    volume = np.sort(realism_day.volume.sum(axis=1))[::-1]
    top = volume[: len(volume) // 100].sum() / volume.sum()
    assert top > 0.20


def test_intraday_volume_is_u_shaped(realism_day: SimulatedDay) -> None:
    regular = realism_day.volume[:, realism_day.regular].sum(axis=0)
    first, last = regular[:30].sum(), regular[-30:].sum()
    midday = regular[120:270].sum() / 5  # 11:30-14:00, per 30 minutes
    assert first > 1.8 * midday
    assert last > 1.8 * midday


def test_extended_hours_are_thin_except_for_movers(realism_day: SimulatedDay) -> None:
    day = realism_day
    total = day.volume.sum(axis=1)
    pre = day.volume[:, : day.times.premarket_minutes].sum(axis=1)
    post = day.volume[:, day.regular.stop :].sum(axis=1)
    gap = np.abs(day.plan.open / day.plan.prev_close - 1)
    movers = gap >= 0.10
    assert movers.sum() >= 5
    quiet_share = pre[~movers].sum() / total[~movers].sum()
    assert quiet_share < 0.05
    assert pre[movers].sum() / total[movers].sum() > 4 * quiet_share
    assert post.sum() / total.sum() < 0.05
    # Most symbols do not trade in a typical pre-market minute; in a regular one most do.
    assert day.active[:, : day.times.premarket_minutes].mean() < 0.35
    assert day.active[:, day.regular].mean() > 0.6


def test_overnight_gaps_are_mostly_small_with_a_few_big_news_gaps(
    realism_day: SimulatedDay,
) -> None:
    gap = np.abs(realism_day.plan.open / realism_day.plan.prev_close - 1)
    assert np.median(gap) < 0.01
    assert (gap < 0.02).mean() > 0.85
    n = len(gap)
    assert 0.0005 * n <= (gap >= 0.10).sum() <= 0.01 * n
    assert gap.max() >= 0.40


def test_momentum_bursts_happen_and_mostly_fade(realism_day: SimulatedDay) -> None:
    price = forward_filled_close(realism_day)[:, realism_day.regular]
    change_5m = price[:, 5:] / price[:, :-5] - 1
    best = np.nanargmax(np.nan_to_num(change_5m, nan=-1), axis=1)
    rows = np.arange(len(price))
    runs = change_5m[rows, best] >= 0.05
    assert runs.sum() >= 0.002 * len(price)
    faded = 0
    for row in np.flatnonzero(runs):
        base, peak = price[row, best[row]], price[row, best[row] + 5]
        later_low = np.nanmin(price[row, best[row] + 5 :])
        faded += (peak - later_low) >= 0.3 * (peak - base)
    assert faded / runs.sum() >= 0.5


def test_many_symbols_make_new_highs_after_the_first_hour(realism_day: SimulatedDay) -> None:
    high = np.where(realism_day.active, realism_day.high, -np.inf)[:, realism_day.regular]
    high_minute = np.argmax(high, axis=1)
    assert (high_minute >= 60).mean() > 0.4


def test_some_gappers_reverse_through_the_open(realism_day: SimulatedDay) -> None:
    plan = realism_day.plan
    gap = plan.open / plan.prev_close - 1
    gapped = np.abs(gap) >= 0.02
    reversed_ = gapped & (np.sign(plan.close - plan.open) == -np.sign(gap))
    assert gapped.sum() >= 50
    assert 0.2 <= reversed_.sum() / gapped.sum() <= 0.8


def test_luld_halts_pause_the_wildest_movers_for_five_minutes(realism_day: SimulatedDay) -> None:
    day = realism_day
    halted = np.flatnonzero(day.plan.halt_start >= 0)
    assert len(halted) >= 2
    high = np.where(day.active, day.high, -np.inf)[:, day.regular].max(axis=1)
    low = np.where(day.active, day.low, np.inf)[:, day.regular].min(axis=1)
    day_range = high / low - 1
    cutoff = np.percentile(day_range, 90)  # among the top 10% movers of the day
    for row in halted:
        start = day.times.premarket_minutes + int(day.plan.halt_start[row])
        assert not day.active[row, start : start + 5].any()  # no trade during the pause
        assert day_range[row] >= cutoff


def test_quiet_symbols_skip_minutes(realism_day: SimulatedDay) -> None:
    traded = realism_day.active[:, realism_day.regular].mean(axis=1)
    assert (traded < 0.5).mean() > 0.1
    assert (traded > 0.95).mean() > 0.3


def test_bars_are_consistent_ohlc_on_the_tick_grid(realism_day: SimulatedDay) -> None:
    day = realism_day
    a = day.active
    assert (day.low[a] <= np.minimum(day.open[a], day.close[a])).all()
    assert (day.high[a] >= np.maximum(day.open[a], day.close[a])).all()
    assert (day.low[a] > 0).all()
    assert (day.volume[a] >= 1).all()
    assert (day.volume[~a] == 0).all()
    dollar = day.close[a] >= 1
    cents = day.close[a][dollar] * 100
    assert np.allclose(cents, np.round(cents), atol=1e-6)


def test_the_plan_opens_and_closes_are_the_minute_bars_official_open_and_close(
    realism_day: SimulatedDay,
) -> None:
    day = realism_day
    first, last = day.regular.start, day.regular.stop - 1
    assert day.active[:, first].all()
    assert day.active[:, last].all()
    assert np.array_equal(day.open[:, first], day.plan.open)
    assert np.array_equal(day.close[:, last], day.plan.close)


def test_yesterdays_close_is_todays_previous_close(realism_market: SimMarket) -> None:
    yesterday, today = realism_market.calendar.previous_sessions(REALISM_DAY, 2)
    assert np.array_equal(
        realism_market.plan(today).prev_close, realism_market.plan(yesterday).close
    )
