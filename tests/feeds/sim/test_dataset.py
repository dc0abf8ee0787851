import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.sim.dataset import FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar, ns_to_et

CAL = market_calendar()
THANKSGIVING_WEEK = [dt.date(2026, 11, 24), dt.date(2026, 11, 25), dt.date(2026, 11, 27)]


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("file_format", list(FileFormat))
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    tmp_path: Path, file_format: FileFormat
) -> None:
    sessions = THANKSGIVING_WEEK[:2]
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset(SimMarket(seed, 120, CAL), tmp_path / name, sessions, file_format)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    differing = set(digest(tmp_path / "a").values()) & set(digest(tmp_path / "c").values())
    assert not differing


@pytest.fixture(scope="module")
def thanksgiving_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("thanksgiving")
    write_dataset(SimMarket(3, 150, CAL), directory, THANKSGIVING_WEEK, FileFormat.PARQUET)
    return directory


def test_bars_fall_only_on_sessions_inside_extended_hours(thanksgiving_dataset: Path) -> None:
    bars = pq.read_table(thanksgiving_dataset / "minute_bars.parquet")
    starts = bars.column("ts").cast("int64").to_numpy() * 1000
    days = {ns_to_et(int(ts)).date() for ts in np.unique(starts // 60_000_000_000 * 60_000_000_000)}
    assert days == set(THANKSGIVING_WEEK)
    for day in THANKSGIVING_WEEK:
        times = CAL.session(day)
        margin = 6 * 3600 * 10**9  # well inside the closed hours around the day
        near = (starts >= times.pre_open_ns - margin) & (starts < times.post_close_ns + margin)
        assert starts[near].min() >= times.pre_open_ns
        assert starts[near].max() + 60 * 10**9 <= times.post_close_ns
    early = CAL.session(dt.date(2026, 11, 27))
    assert ns_to_et(early.post_close_ns).time() == dt.time(17, 0)


def test_daily_bars_cover_the_minute_sessions_and_40_sessions_before_only_on_sessions(
    thanksgiving_dataset: Path,
) -> None:
    daily = pq.read_table(thanksgiving_dataset / "daily_bars.parquet")
    dates = sorted(set(daily.column("date").to_pylist()))
    assert len(dates) == 43
    assert dates[-3:] == THANKSGIVING_WEEK
    assert all(CAL.is_session(d) for d in dates)
    assert dt.date(2026, 11, 26) not in dates
    assert pc.min(daily.column("low")).as_py() > 0


def test_daily_bars_of_minute_sessions_aggregate_their_minute_bars(
    thanksgiving_dataset: Path,
) -> None:
    table = pq.read_table(thanksgiving_dataset / "minute_bars.parquet")
    bars = table.to_pandas()
    bars["ts_ns"] = table.column("ts").cast("int64").to_numpy() * 1000
    daily = pq.read_table(thanksgiving_dataset / "daily_bars.parquet").to_pandas()
    day = dt.date(2026, 11, 27)
    times = CAL.session(day)
    of_day = bars[(bars.ts_ns >= times.pre_open_ns) & (bars.ts_ns < times.post_close_ns)]
    regular = of_day[
        (of_day.ts_ns >= times.regular_open_ns) & (of_day.ts_ns < times.regular_close_ns)
    ].sort_values("ts_ns", kind="stable")
    expected = regular.groupby("symbol").agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last")
    )
    expected["volume"] = of_day.groupby("symbol")["volume"].sum()
    got = daily[daily["date"] == day].set_index("symbol").sort_index()
    expected = expected.sort_index()
    assert list(got.index) == list(expected.index)
    for column in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(got[column].to_numpy(), expected[column].to_numpy()), column
