"""Every indicator of a replayed day equals a plain pandas/TA-Lib recomputation from the files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import talib

from tapescan.feeds.history import Warmup
from tapescan.feeds.sim.dataset import FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.indicators.compute import compute_columns
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.model import Universe
from tapescan.state.market_state import MarketState
from tests.indicators import reference as ref

CAL = market_calendar()
LAST_DAY = dt.date(2026, 11, 27)  # an early close (13:00), after the Thanksgiving holiday
SESSIONS = [*CAL.previous_sessions(LAST_DAY, 10), LAST_DAY]


@dataclass
class Dataset:
    directory: Path
    universe: Universe
    minutes: pd.DataFrame
    daily: pd.DataFrame
    reference: pa.Table


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    directory = tmp_path_factory.mktemp("reference")
    market = SimMarket(21, 150, CAL)
    paths = write_dataset(market, directory, SESSIONS, FileFormat.PARQUET)
    reference = pq.read_table(paths.reference)
    return Dataset(
        directory=directory,
        universe=Universe(reference.column("symbol").to_pylist()),
        minutes=ref.load_minutes(paths.minute_bars),
        daily=pq.read_table(paths.daily_bars).to_pandas(),
        reference=reference,
    )


INSTANTS = [
    (SESSIONS[-2], dt.time(15, 59)),  # the session before, near its close: 9 sessions of history
    (LAST_DAY, dt.time(8, 45)),  # pre-market
    (LAST_DAY, dt.time(10, 15)),  # regular session, on a minute boundary
    (LAST_DAY, dt.time(11, 2, 30)),  # between boundaries
    (LAST_DAY, dt.time(14, 0)),  # post-market of an early close
]


@pytest.fixture(scope="module")
def replayed(dataset: Dataset) -> dict[int, dict[str, np.ndarray]]:
    """Columns at each instant of one replay that rolls through every session bar by bar."""
    state = MarketState(dataset.universe, CAL, SESSIONS[0])
    state.load_reference(dataset.reference)
    daily = dataset.daily
    history = pa.Table.from_pandas(daily[daily["date"] < SESSIONS[0]], preserve_index=False)
    state.load_warmup(Warmup.of(SESSIONS[0], history))
    batches = ref.minute_batches(dataset.minutes, dataset.universe)
    pending = next(batches, None)
    out = {}
    for until in sorted(et_to_ns(day, at) for day, at in INSTANTS):
        while pending is not None and pending.ts_event_ns <= until:
            state.apply(pending)
            pending = next(batches, None)
        state.advance_to(until)
        out[until] = {name: values.copy() for name, values in compute_columns(state).items()}
    return out


def by_symbol(values: np.ndarray, universe: Universe) -> pd.Series:
    return pd.Series(values, index=list(universe.symbols))


def assert_matches(actual: pd.Series, expected: pd.Series, name: str) -> None:
    expected = expected.reindex(actual.index).astype(np.float64)
    np.testing.assert_allclose(
        actual.to_numpy(np.float64), expected.to_numpy(), rtol=1e-9, atol=1e-9, err_msg=name
    )


@pytest.mark.parametrize(("day", "at"), INSTANTS)
def test_state_indicators_equal_a_recomputation_from_the_files(
    dataset: Dataset, replayed: dict[int, dict[str, np.ndarray]], day: dt.date, at: dt.time
) -> None:
    until = et_to_ns(day, at)
    columns = replayed[until]
    universe = dataset.universe
    got = {name: by_symbol(values, universe) for name, values in columns.items()}
    times = CAL.session(day)

    daily = dataset.daily[dataset.daily["date"] < day].sort_values(["symbol", "date"])
    prev_close = daily.groupby("symbol")["close"].last()
    assert_matches(got["prev_close"], prev_close, "prev_close")

    atr = {}
    for symbol, bars in daily.groupby("symbol"):
        values = talib.ATR(
            bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy(), timeperiod=14
        )
        atr[symbol] = values[-1]
    assert_matches(got["atr"], pd.Series(atr), "atr")
    assert_matches(got["atr_pct"], pd.Series(atr) / prev_close * 100, "atr_pct")

    last_20 = sorted(daily["date"].unique())[-20:]
    volume_20 = daily[daily["date"].isin(last_20)].groupby("symbol")["volume"].sum() / len(last_20)
    assert_matches(got["avg_volume_20d"], volume_20, "avg_volume_20d")

    today = ref.day_bars(dataset.minutes, CAL, day, until)
    grouped = today.groupby("symbol")
    volume = grouped["volume"].sum().reindex(list(universe.symbols), fill_value=0)
    assert_matches(got["volume"], volume, "volume")
    dollars = (today["vwap"] * today["volume"]).groupby(today["symbol"]).sum()
    assert_matches(
        got["dollar_volume"],
        dollars.reindex(list(universe.symbols), fill_value=0.0),
        "dollar_volume",
    )
    assert_matches(got["vwap"], dollars / grouped["volume"].sum(), "vwap")
    assert_matches(got["hod"], grouped["high"].max(), "hod")
    assert_matches(got["lod"], grouped["low"].min(), "lod")
    pre = today[today["start_ns"] < times.regular_open_ns].groupby("symbol")
    assert_matches(got["pm_high"], pre["high"].max(), "pm_high")
    assert_matches(got["pm_low"], pre["low"].min(), "pm_low")

    price = ref.price_as_of(dataset.minutes, until)
    assert_matches(got["price"], price, "price")
    change = (price - prev_close) / prev_close * 100
    assert_matches(got["change_pct"], change, "change_pct")
    regular = today[
        (today["start_ns"] >= times.regular_open_ns) & (today["start_ns"] < times.regular_close_ns)
    ]
    if until >= times.regular_open_ns:
        official_open = regular.groupby("symbol")["open"].first()
        assert_matches(got["open"], official_open, "open")
        assert_matches(got["gap_pct"], (official_open - prev_close) / prev_close * 100, "gap_pct")
        assert_matches(
            got["change_from_open_pct"], (price - official_open) / official_open * 100, "from open"
        )
    else:
        assert got["open"].isna().all()
        assert_matches(got["gap_pct"], change, "indicative gap_pct")
        assert got["change_from_open_pct"].isna().all()
    if until >= times.regular_close_ns:
        close = regular.groupby("symbol")["close"].last()
        assert_matches(got["close"], close, "close")
        assert_matches(got["post_change_pct"], (price - close) / close * 100, "post_change_pct")
    else:
        assert got["close"].isna().all()
        assert got["post_change_pct"].isna().all()
    hod = grouped["high"].max()
    assert_matches(got["from_hod_pct"], (price - hod) / hod * 100, "from_hod_pct")
    prev = prev_close.reindex(hod.index)
    span = pd.Series(np.maximum(hod, prev) - np.minimum(grouped["low"].min(), prev))
    assert_matches(got["range_atr_pct"], span / pd.Series(atr) * 100, "range_atr_pct")

    baseline = CAL.previous_sessions(day, 10)
    if baseline[0] < SESSIONS[0]:  # fewer than 10 sessions of minute history: null, no substitute
        assert got["rvol"].isna().all()
        assert got["vol_spike"].isna().all()
    else:
        elapsed = until - times.pre_open_ns
        expected = ref.expected_volume(dataset.minutes, CAL, baseline, elapsed)
        expected = expected.reindex(list(universe.symbols), fill_value=0.0)
        rvol = (volume / expected).where(expected >= 1000)
        assert_matches(got["rvol"], rvol, "rvol")
        assert got["rvol"].notna().sum() > 20
        slot_ns = 300_000_000_000
        slot_start = elapsed // slot_ns * slot_ns
        at_end = ref.expected_volume(dataset.minutes, CAL, baseline, slot_start + slot_ns)
        at_start = ref.expected_volume(dataset.minutes, CAL, baseline, slot_start)
        per_minute = (at_end - at_start.reindex(at_end.index, fill_value=0.0)) / 5
        per_minute = per_minute.reindex(list(universe.symbols), fill_value=0.0)
        recent_volume = got["vol_1m"]
        spike = (recent_volume / per_minute).where(per_minute >= 100)
        assert_matches(got["vol_spike"], spike, "vol_spike")

    for minutes in (1, 5, 15):
        boundary = (until - minutes * 60_000_000_000) // 60_000_000_000 * 60_000_000_000
        before = ref.price_as_of(dataset.minutes, boundary)
        assert_matches(
            got[f"chg_{minutes}m_pct"], (price - before) / before * 100, f"chg_{minutes}m_pct"
        )

    recent = dataset.minutes[
        (dataset.minutes["start_ns"] + 60_000_000_000 > until - 60_000_000_000)
        & (dataset.minutes["start_ns"] + 60_000_000_000 <= until)
    ]
    vol_1m = recent.groupby("symbol")["volume"].sum().reindex(list(universe.symbols), fill_value=0)
    assert_matches(got["vol_1m"], vol_1m, "vol_1m")
