"""The RVOL ring gives the same baseline whether it lives in memory or in a file mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tapescan.feeds.history import SLOTS_PER_DAY
from tapescan.ops.memory import release_free_memory, rss_bytes
from tapescan.state.rvol_history import RvolHistory


def test_file_backed_ring_equals_the_in_memory_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    symbols, sessions = 500, 4
    in_memory = RvolHistory(symbols, sessions)
    mapped = RvolHistory(symbols, sessions, tmp_path / "ring.u32")
    for _ in range(sessions + 3):  # wraps around: the oldest sessions are dropped
        day = rng.integers(0, 50_000, (symbols, SLOTS_PER_DAY))
        in_memory.push(day)
        mapped.push(day)
        assert mapped.complete == in_memory.complete
        np.testing.assert_array_equal(mapped.baseline_cumulative, in_memory.baseline_cumulative)
    assert (tmp_path / "ring.u32").stat().st_size == sessions * symbols * SLOTS_PER_DAY * 4


def test_the_mapped_ring_is_not_resident_between_pushes(tmp_path: Path) -> None:
    symbols, sessions = 12_000, 10  # the real size: 92 MB of ring
    day = np.ones((symbols, SLOTS_PER_DAY), dtype=np.uint32)  # the input (9 MB) is not measured
    before = rss_bytes()
    history = RvolHistory(symbols, sessions, tmp_path / "ring.u32")
    for _ in range(sessions):  # every plane of the ring written and summed
        history.push(day)
    assert history.complete
    release_free_memory()  # the sums' temporaries, not the ring, are what the heap may keep
    ring_bytes = sessions * symbols * SLOTS_PER_DAY * 4
    baseline_bytes = symbols * (SLOTS_PER_DAY + 1) * 8
    # neither the 92 MB ring nor the 18.5 MB baseline stays (in memory: >= 110 MB)
    assert rss_bytes() - before < 8 * 1024**2, rss_bytes() - before
    # a day of scan cycles reads two boundaries at a time: only those stay resident
    for slot in range(SLOTS_PER_DAY):
        bounds = history.baseline(slot)
        assert np.array_equal(bounds, history.baseline_cumulative[slot : slot + 2])
    grown = rss_bytes() - before
    assert grown < 8 * 1024**2, grown
    assert (tmp_path / "ring.baseline.f64").stat().st_size == baseline_bytes
    assert (tmp_path / "ring.u32").stat().st_size == ring_bytes


def test_the_baseline_is_the_mean_of_each_sessions_cumulative_volume(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    symbols, sessions = 300, 3
    history = RvolHistory(symbols, sessions, tmp_path / "ring.u32")
    days = [rng.integers(0, 10_000, (symbols, SLOTS_PER_DAY)) for _ in range(sessions + 1)]
    for day in days:
        history.push(day, recompute=False)
    history.recompute()
    kept = np.stack(days[-sessions:])  # the oldest was dropped
    expected = np.cumsum(kept.sum(axis=0) / sessions, axis=1)
    assert np.array_equal(history.baseline_cumulative[0], np.zeros(symbols))
    assert np.array_equal(history.baseline_cumulative[1:], expected.T)
    assert np.array_equal(history.baseline(7), expected.T[6:8])
