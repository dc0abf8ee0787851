from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tapescan.feeds.base import FeedError
from tapescan.feeds.history import DAILY_HISTORY_SESSIONS, MINUTE_HISTORY_SESSIONS, SLOTS_PER_DAY
from tapescan.feeds.replay import ReadLimits, ReplayFeed, ReplayFileError
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.market.clock import FastClock
from tapescan.model import AggregateBatch, AggregateKind, FeedEvent, FeedState, FeedStatus
from tests.feeds.replay.conftest import SEED, SYMBOLS, SimulatedFiles
from tests.feeds.replay.helpers import (
    DAY,
    FIELDS,
    FORMATS,
    PREVIOUS_DAY,
    SMALL,
    RecordingClock,
    at,
    batches_of,
    column,
    daily_bars,
    minute_bars,
    reference_table,
    replay,
    write_files,
)
from tests.warmups import gathered

CAL = market_calendar()
ET = ZoneInfo("America/New_York")


async def test_replayed_minute_bars_equal_the_simulators_live_minute_aggregates(
    simulated: SimulatedFiles,
) -> None:
    """The minute bars replayed from simulate files equal the per-minute aggregates the
    simulator emits live for the same seed and date."""
    times = CAL.session(DAY)
    live_feed = SimFeed(SimMarket(SEED, SYMBOLS, CAL), second_aggregates=False)
    clock = FastClock(times.pre_open_ns)
    live = [
        event
        async for event in live_feed.events(clock, times.pre_open_ns, times.post_close_ns)
        if isinstance(event, AggregateBatch) and len(event)  # the simulator sends empty minutes
    ]
    assert len(live) > times.extended_minutes // 2
    for file_format in FORMATS:
        feed = ReplayFeed.from_files(
            simulated.files(file_format), limits=ReadLimits(batch_rows=5_000)
        )
        assert feed.universe.symbols == live_feed.universe.symbols
        replayed = batches_of(await replay(feed, times.pre_open_ns, times.post_close_ns))
        assert [b.ts_event_ns for b in replayed] == [b.ts_event_ns for b in live]
        assert {b.kind for b in replayed} == {AggregateKind.MINUTE}
        for name in FIELDS:
            assert np.array_equal(column(replayed, name), column(live, name)), (file_format, name)
            assert column(replayed, name).dtype == column(live, name).dtype


@pytest.mark.parametrize("file_format", FORMATS)
async def test_a_bar_is_emitted_at_its_end_so_until_excludes_the_bar_that_starts_then(
    tmp_path: Path, file_format: str
) -> None:
    files = write_files(
        tmp_path, file_format, minute_bars(["AAA"], [at(10, m) for m in range(10, 20)])
    )
    feed = ReplayFeed.from_files(files, limits=SMALL)
    for until in (at(10, 15), at(10, 15) + 30_000_000_000):
        events = await replay(feed, at(4, 0), until)
        starts = [int(b.start_ns[0]) for b in batches_of(events)]
        assert starts == [at(10, m) for m in range(10, 15)]  # 10:14 is in, 10:15 is not
    assert [int(b.start_ns[0]) for b in batches_of(await replay(feed, at(4, 0)))][-1] == at(10, 19)


async def test_bars_that_ended_before_the_start_come_at_once_and_later_ones_at_their_end(
    tmp_path: Path,
) -> None:
    files = write_files(
        tmp_path, "parquet", minute_bars(["AAA", "BBB"], [at(9, m) for m in range(10)])
    )
    feed = ReplayFeed.from_files(files)
    start = at(9, 5) + 30_000_000_000  # half way through the 09:05 bar
    clock = RecordingClock(start)
    emitted = []
    async for event in feed.events(clock, start):
        if isinstance(event, AggregateBatch):
            emitted.append((event.ts_event_ns, clock.now_ns()))
    ends = [at(9, m + 1) for m in range(10)]
    assert [end for end, _ in emitted] == ends
    caught_up = [(end, now) for end, now in emitted if end <= start]
    assert caught_up == [(end, start) for end in ends[:5]]  # no waiting: the clock stood still
    assert clock.waits == ends[5:]  # 09:05 ends at 09:06, after the start: it waits
    assert all(now == end for end, now in emitted[5:])


async def test_the_first_and_last_events_report_replaying_and_ended(tmp_path: Path) -> None:
    files = write_files(tmp_path, "csv", minute_bars(["AAA"], [at(9, 0), at(9, 1)]))
    feed = ReplayFeed.from_files(files)
    events = await replay(feed, at(4, 0))
    first, last = events[0], events[-1]
    assert isinstance(first, FeedStatus)
    assert first.state is FeedState.REPLAYING
    assert first.ts_event_ns == at(4, 0)
    assert isinstance(last, FeedStatus)
    assert last.state is FeedState.ENDED
    assert last.ts_event_ns == at(9, 2)
    assert all(isinstance(e, AggregateBatch) and e.ts_init_ns > 0 for e in events[1:-1])


async def test_earlier_trading_days_are_left_to_the_warm_up(tmp_path: Path) -> None:
    starts = [at(15, 59, PREVIOUS_DAY), at(19, 59, PREVIOUS_DAY), at(4, 0), at(4, 1)]
    feed = ReplayFeed.from_files(write_files(tmp_path, "parquet", minute_bars(["AAA"], starts)))
    assert feed.sessions == (PREVIOUS_DAY, DAY)
    emitted = [int(b.start_ns[0]) for b in batches_of(await replay(feed, at(9, 30)))]
    assert emitted == [at(4, 0), at(4, 1)]
    from_first = [
        int(b.start_ns[0])
        for b in batches_of(await replay(feed, CAL.session(PREVIOUS_DAY).pre_open_ns))
    ]
    assert from_first == starts


async def test_a_start_outside_the_calendar_is_a_feed_error(tmp_path: Path) -> None:
    feed = ReplayFeed.from_files(write_files(tmp_path, "parquet", minute_bars(["AAA"], [at(9, 0)])))
    with pytest.raises(FeedError, match="cannot replay from 2040"):
        await replay(feed, int(dt.datetime(2040, 1, 3, tzinfo=dt.UTC).timestamp()) * 10**9)


async def test_each_minute_batch_is_in_universe_order(tmp_path: Path) -> None:
    symbols = ["MMM", "AAA", "ZZZ", "BBB"]
    bars = minute_bars(sorted(symbols), [at(9, 0), at(9, 1)])
    files = write_files(tmp_path, "csv", bars, reference=reference_table(symbols))
    feed = ReplayFeed.from_files(files)
    assert feed.universe.symbols == tuple(symbols)
    for batch in batches_of(await replay(feed, at(4, 0))):
        assert batch.symbol_index.tolist() == [0, 1, 2, 3]
        names = [symbols[i] for i in batch.symbol_index]
        assert batch.open.tolist() == [10.0 + sorted(symbols).index(s) for s in names]


def test_the_universe_is_the_reference_order_then_other_symbols_sorted(tmp_path: Path) -> None:
    bars = minute_bars(["AAA", "QQQ", "MMM"], [at(9, 0)])
    daily = daily_bars(["AAA", "BBB"], [PREVIOUS_DAY])
    reference = reference_table(["ZZZ", "AAA"])
    feed = ReplayFeed.from_files(write_files(tmp_path, "parquet", bars, daily, reference))
    assert feed.universe.symbols == ("ZZZ", "AAA", "BBB", "MMM", "QQQ")
    table = feed.reference()
    assert table.column("symbol").to_pylist() == list(feed.universe.symbols)
    assert table.column("name").to_pylist() == ["ZZZ Inc.", "AAA Inc.", None, None, None]
    assert table.column("exchange").null_count == 5  # a column the file does not have


def test_a_bad_file_fails_when_the_feed_is_opened(tmp_path: Path) -> None:
    bars = minute_bars(["AAA"], [at(9, 0), at(9, 1)])
    bars = bars.set_column(6, "volume", pa.array([5, -5], pa.int64()))
    with pytest.raises(ReplayFileError, match=r"minute_bars.csv: row 2 \(line 3\), field 'vol"):
        ReplayFeed.from_files(write_files(tmp_path, "csv", bars))


def recomputed_slot_volume(bars: pa.Table, day: dt.date, symbols: tuple[str, ...]) -> np.ndarray:
    """Slot volume the slow way: each bar's New York wall time, row by row."""
    slots = np.zeros((len(symbols), SLOTS_PER_DAY))
    row = {symbol: k for k, symbol in enumerate(symbols)}
    for symbol, ts, volume in zip(
        bars.column("symbol").to_pylist(),
        bars.column("ts").to_pylist(),
        bars.column("volume").to_pylist(),
        strict=True,
    ):
        local = ts.astimezone(ET)
        if local.date() == day:
            slots[row[symbol], (local.hour * 60 + local.minute - 4 * 60) // 5] += volume
    return slots


@pytest.mark.parametrize("file_format", FORMATS)
def test_warm_up_slot_volume_equals_a_direct_recomputation(
    simulated: SimulatedFiles, file_format: str
) -> None:
    feed = ReplayFeed.from_files(simulated.files(file_format), limits=ReadLimits(batch_rows=2_000))
    steps: list[tuple[int, int]] = []
    next_day = CAL.next_session(DAY)
    warmup = feed.warmup(next_day, on_step=lambda done, total: steps.append((done, total)))
    _, slot_volume = gathered(warmup)
    assert list(slot_volume) == [PREVIOUS_DAY, DAY]  # either side of the clock change
    bars = pq.read_table(simulated.parquet.minute_bars)
    for day, slots in slot_volume.items():
        assert slots.shape == (SYMBOLS, SLOTS_PER_DAY)
        assert slots.dtype == np.uint32  # like state's own slot volume: half the memory of float64
        assert np.array_equal(slots, recomputed_slot_volume(bars, day, feed.universe.symbols))
        assert np.array_equal(slots, simulated.market.slot_volume(day))
    assert steps[-1] == (bars.num_rows, bars.num_rows)
    assert warmup.session == next_day


@pytest.mark.parametrize("file_format", FORMATS)
def test_warm_up_daily_bars_are_the_last_sessions_before_the_one_replayed(
    simulated: SimulatedFiles, file_format: str
) -> None:
    feed = ReplayFeed.from_files(simulated.files(file_format))
    warmup = feed.warmup(DAY)
    warmup_daily, slot_volume = gathered(warmup)
    daily = pq.read_table(simulated.parquet.daily_bars)
    dates = sorted({d for d in daily.column("date").to_pylist() if d < DAY})
    expected_dates = dates[-DAILY_HISTORY_SESSIONS:]
    assert sorted(set(warmup_daily.column("date").to_pylist())) == expected_dates
    assert expected_dates[-1] == PREVIOUS_DAY
    wanted = daily.filter(pc.is_in(daily.column("date"), pa.array(expected_dates)))
    assert warmup_daily.num_rows == wanted.num_rows
    assert warmup_daily.schema == daily.schema
    keys = list(
        zip(
            warmup_daily.column("date").to_pylist(),
            warmup_daily.column("symbol").to_pylist(),
            strict=True,
        )
    )
    rows = [(d, feed.universe.index_of(s)) for d, s in keys]
    assert rows == sorted(rows)  # by date, then universe row
    assert list(slot_volume) == [PREVIOUS_DAY]


def test_warm_up_before_any_history_is_empty(tmp_path: Path) -> None:
    feed = ReplayFeed.from_files(write_files(tmp_path, "parquet", minute_bars(["AAA"], [at(9, 0)])))
    daily, slot_volume = gathered(feed.warmup(PREVIOUS_DAY))
    assert daily.num_rows == 0
    assert slot_volume == {}


async def test_many_symbols_in_one_minute_arrive_as_one_batch(tmp_path: Path) -> None:
    symbols = [f"S{k:03d}" for k in range(40)]
    files = write_files(tmp_path, "csv", minute_bars(symbols, [at(9, 0), at(9, 1)]))
    feed = ReplayFeed.from_files(files, limits=ReadLimits(batch_rows=7, csv_block_bytes=512))
    batches = batches_of(await replay(feed, at(4, 0)))
    assert [len(b) for b in batches] == [40, 40]
    per_minute: dict[int, set[int]] = defaultdict(set)
    for batch in batches:
        per_minute[int(batch.start_ns[0])].update(batch.symbol_index.tolist())
    assert per_minute == {at(9, 0): set(range(40)), at(9, 1): set(range(40))}


async def test_the_reference_file_is_optional(tmp_path: Path) -> None:
    files = write_files(tmp_path, "csv", minute_bars(["BBB", "AAA"], [at(9, 0)]))
    feed = ReplayFeed.open(files.minute_bars, files.daily_bars, None, CAL)
    assert feed.universe.symbols == ("AAA", "BBB")
    assert feed.reference().column("symbol").to_pylist() == ["AAA", "BBB"]
    assert feed.reference().column("name").null_count == 2
    assert len(batches_of(await replay(feed, at(4, 0)))) == 1


async def test_a_replay_stopped_early_closes_cleanly(tmp_path: Path) -> None:
    feed = ReplayFeed.from_files(
        write_files(tmp_path, "parquet", minute_bars(["AAA"], [at(9, m) for m in range(5)]))
    )
    events = feed.events(FastClock(at(4, 0)), at(4, 0))
    seen = [event async for event in _first_batches(events, 2)]
    await events.aclose()
    assert len(seen) == 2


async def _first_batches(events: AsyncIterator[FeedEvent], count: int) -> AsyncIterator[FeedEvent]:
    async for event in events:
        if isinstance(event, AggregateBatch):
            yield event
            count -= 1
            if count == 0:
                return


class StalledClock(FastClock):
    """A clock that never gets there: the replay waits until it is cancelled."""

    def __init__(self, start_ns: int) -> None:
        super().__init__(start_ns)
        self.waiting = asyncio.Event()

    async def sleep_until(self, ts_ns: int) -> None:
        self.waiting.set()
        await asyncio.Event().wait()


async def test_a_replay_waiting_for_its_clock_can_be_cancelled(tmp_path: Path) -> None:
    feed = ReplayFeed.from_files(
        write_files(tmp_path, "csv", minute_bars(["AAA"], [at(9, m) for m in range(5)]))
    )
    clock = StalledClock(at(9, 2))

    async def consume() -> None:
        async for _ in feed.events(clock, at(9, 2)):
            pass

    task = asyncio.create_task(consume())
    await clock.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_file_out_of_time_order_replays_the_same_batches_as_one_in_order(
    tmp_path: Path, simulated: SimulatedFiles
) -> None:
    """Files in time order stream straight through; others are sorted by DuckDB first."""
    bars = pq.read_table(simulated.parquet.minute_bars)
    shuffled = bars.take(np.random.default_rng(9).permutation(bars.num_rows))
    pq.write_table(shuffled, tmp_path / "minute_bars.parquet")
    files = simulated.parquet
    out_of_order = ReplayFeed.open(tmp_path / "minute_bars.parquet", files.daily_bars)
    in_order = ReplayFeed.open(files.minute_bars, files.daily_bars)
    assert in_order.summary.minute_bars.time_ordered
    assert not out_of_order.summary.minute_bars.time_ordered
    times = CAL.session(DAY)
    window = (times.pre_open_ns + 3_600_000_000_000, times.regular_close_ns)
    expected = batches_of(await replay(in_order, *window))
    got = batches_of(await replay(out_of_order, *window))
    assert [b.ts_event_ns for b in got] == [b.ts_event_ns for b in expected]
    for name in FIELDS:
        assert np.array_equal(column(got, name), column(expected, name)), name


def _files_with_sessions(directory: Path, minute_days: int, daily_days: int) -> ReplayFeed:
    """Minute bars of the ``minute_days`` sessions to DAY, daily bars of ``daily_days`` before."""
    minute = [*CAL.previous_sessions(DAY, minute_days - 1), DAY]
    daily = CAL.previous_sessions(minute[0], daily_days) + minute
    bars = minute_bars(["AAA"], [at(9, 30, day) for day in minute])
    return ReplayFeed.from_files(
        write_files(directory, "parquet", bars, daily_bars(["AAA"], daily))
    )


def test_a_run_starts_on_the_first_day_with_a_complete_rvol_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not on the first day of the files, which has no earlier sessions for RVOL."""
    feed = _files_with_sessions(tmp_path, 14, DAILY_HISTORY_SESSIONS)
    eleventh = feed.sessions[MINUTE_HISTORY_SESSIONS]
    with caplog.at_level(logging.INFO, "tapescan.feeds.replay.feed"):
        assert feed.first_session() == eleventh
    assert feed.default_start_ns() == CAL.session(eleventh).pre_open_ns
    assert f"replay starts on {eleventh}, the first day with a complete RVOL baseline" in (
        caplog.text
    )
    assert gathered(feed.warmup(eleventh))[1].keys() == set(feed.sessions[:10])


def test_without_a_complete_baseline_a_run_starts_on_the_last_day_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for minute_days, daily_days in ((5, DAILY_HISTORY_SESSIONS), (14, 20)):
        directory = tmp_path / f"{minute_days}-{daily_days}"
        directory.mkdir()
        feed = _files_with_sessions(directory, minute_days, daily_days)
        caplog.clear()
        with caplog.at_level(logging.INFO, "tapescan.feeds.replay.feed"):
            assert feed.first_session() == DAY
        assert f"replay starts on {DAY}, the last day, with a partial RVOL baseline" in (
            caplog.text
        )
