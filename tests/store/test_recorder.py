"""The recorder against a store that fails on demand: queue, spill, write back, lose nothing.

(The end-to-end version, a real PostgreSQL killed mid-session, is test_outage.py.)
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tapescan.store import recorder as recorder_module
from tapescan.store.base import Store, StoreUnavailableError
from tapescan.store.migrations import Migration
from tapescan.store.recorder import Recorder, RecorderLimits
from tapescan.store.tables import TableSpec

QUEUE_ROWS = 100


class FlakyStore(Store):
    """Keeps what it is given in memory; ``up = False`` makes every write and reconnect fail."""

    backend = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.reconnect_error: Exception | None = None  # raised once by the next reconnect
        self.delay_s = 0.0  # how long a write takes
        self.hang = False  # writes wait until interrupt(), as on a frozen server
        self.in_call = threading.Event()
        self.interrupts = 0
        self._interrupted = threading.Event()
        self.written: dict[str, list[pa.Table]] = {}

    def _append(
        self, spec: TableSpec, table: pa.Table, replace: bool, replacing: pa.Table | None
    ) -> None:
        if not self.up:
            raise StoreUnavailableError("flaky store is down")
        if self.hang:
            self._interrupted.clear()
            self.in_call.set()
            self._interrupted.wait(60)
            raise StoreUnavailableError("connection shut under a hung write")
        time.sleep(self.delay_s)  # a slow database
        self.written.setdefault(spec.name, []).append(table)

    def reconnect(self) -> None:
        error, self.reconnect_error = self.reconnect_error, None
        if error is not None:
            raise error
        if not self.up or self.hang:  # a frozen server: connecting times out
            raise StoreUnavailableError("flaky store is down")

    def interrupt(self) -> None:
        self.interrupts += 1
        self._interrupted.set()

    def symbols(self) -> list[str]:
        tables = self.written.get("symbols", [])
        return [s for t in tables for s in t.column("symbol").to_pylist()]

    def _applied_versions(self) -> set[int]:
        raise NotImplementedError

    def _apply_migration(self, migration: Migration) -> None:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        raise NotImplementedError

    def sessions(self, name: str) -> list[dt.date]:
        raise NotImplementedError

    def drop_session(self, name: str, session: dt.date) -> None:
        raise NotImplementedError

    def table_bytes(self) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "RETRY_S", (0.01, 0.02, 0.05, 0.05))


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def recorder(store: FlakyStore, tmp_path: Path) -> Iterator[Recorder]:
    recorder = Recorder(store, tmp_path / "spill", RecorderLimits(QUEUE_ROWS, flush_s=0.05))
    recorder.start()
    yield recorder
    recorder.stop(timeout_s=5)


def symbols(first: int, count: int) -> pa.Table:
    return pa.table({"symbol": [f"S{i:05d}" for i in range(first, first + count)]})


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a condition the writer thread makes true (it offers nothing to await)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_rows_spill_while_down_and_are_written_back_in_order(
    store: FlakyStore, recorder: Recorder
) -> None:
    recorder.put("symbols", symbols(0, 10))
    assert recorder.flush(5)
    store.up = False
    for batch in range(10):
        recorder.put("symbols", symbols(10 + batch * 50, 50))
    # settled: everything spilled but the last (at most QUEUE_ROWS) rows, which stay queued
    until(
        lambda: (
            recorder.stats.spilled_rows + recorder.stats.queued_rows == 500
            and recorder.stats.queued_rows <= QUEUE_ROWS
        )
    )
    assert recorder.stats.spilled_rows > QUEUE_ROWS
    assert not recorder.stats.store_up
    assert recorder.stats.spill_files == len(list(recorder.spill_dir.glob("*.parquet"))) > 0
    assert not recorder.flush(0.2)  # nothing is committed while the store is down

    store.up = True
    assert recorder.flush(5)
    stats = recorder.stats
    assert store.symbols() == symbols(0, 510).column("symbol").to_pylist()  # once, in order
    assert stats.store_up
    assert stats.restored_rows == stats.spilled_rows > QUEUE_ROWS
    assert (stats.written_rows, stats.queued_rows, stats.lost_rows) == (510, 0, 0)
    assert (stats.spill_files, stats.spill_bytes) == (0, 0)
    assert list(recorder.spill_dir.iterdir()) == []


def test_memory_stays_bounded_during_a_long_write_back(
    store: FlakyStore, recorder: Recorder
) -> None:
    store.up = False
    for batch in range(26):  # one spill file each: over a second of write-back at 50 ms a file
        recorder.put("symbols", symbols(batch * 150, 150))
        spilled = (batch + 1) * 150
        until(lambda: recorder.stats.spilled_rows == spilled)  # noqa: B023 - used at once
    assert recorder.stats.spill_files == 26
    store.delay_s = 0.05
    store.up = True
    peak = 0
    for batch in range(100):  # 1,000 rows a second go on arriving meanwhile
        recorder.put("symbols", symbols(3900 + batch * 10, 10))
        peak = max(peak, recorder.stats.queued_rows)
        time.sleep(0.01)
    assert recorder.flush(20)
    assert peak <= 4 * QUEUE_ROWS, f"{peak} rows held in memory during the write-back"
    assert store.symbols() == symbols(0, 4900).column("symbol").to_pylist()  # once, in order
    assert recorder.stats.restored_rows == recorder.stats.spilled_rows
    assert recorder.stats.lost_rows == 0


def test_a_flush_during_an_outage_waits_without_spinning(
    store: FlakyStore, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.up = False
    recorder.put("symbols", symbols(0, 10))
    until(lambda: not recorder.stats.store_up)
    takes = 0
    take = recorder._take

    def counted() -> Any:
        nonlocal takes
        takes += 1
        return take()

    monkeypatch.setattr(recorder, "_take", counted)
    assert not recorder.flush(0.5)
    assert not recorder.flush(0.5)  # the first one's ticket is still open meanwhile
    # one pass per flush_s (0.05 s) or so, not a busy loop
    assert takes < 60, f"the writer looped {takes} times in 1 s"
    store.up = True
    assert recorder.flush(5)
    assert store.symbols() == symbols(0, 10).column("symbol").to_pylist()


def test_an_unexpected_reconnect_error_does_not_end_the_writer(
    store: FlakyStore, recorder: Recorder
) -> None:
    store.up = False
    recorder.put("symbols", symbols(0, 10))
    until(lambda: not recorder.stats.store_up)
    store.reconnect_error = RuntimeError("a driver bug")
    store.up = True
    assert recorder.flush(5)
    assert store.symbols() == symbols(0, 10).column("symbol").to_pylist()
    assert recorder._thread is not None
    assert recorder._thread.is_alive()


def test_rows_spilled_at_stop_are_written_back_by_the_next_start(
    store: FlakyStore, tmp_path: Path
) -> None:
    first = Recorder(store, tmp_path / "spill", RecorderLimits(QUEUE_ROWS, flush_s=0.05))
    first.start()
    store.up = False
    recorder_rows = symbols(0, 30)
    first.put("symbols", recorder_rows)
    first.stop(timeout_s=5)
    assert first.stats.spilled_rows == 30
    assert store.symbols() == []

    store.up = True
    second = Recorder(store, tmp_path / "spill", RecorderLimits(QUEUE_ROWS, flush_s=0.05))
    assert second.stats.spill_files == 1
    second.start()
    try:
        assert second.flush(5)
        assert store.symbols() == recorder_rows.column("symbol").to_pylist()
        assert second.stats.restored_rows == 30
        assert second.stats.spill_files == 0
    finally:
        second.stop(timeout_s=5)


def test_a_write_that_hangs_is_broken_off_and_its_rows_spill_then_return(
    store: FlakyStore, tmp_path: Path
) -> None:
    """A frozen database holds a write forever; the watchdog breaks it off so rows can spill."""
    limits = RecorderLimits(QUEUE_ROWS, flush_s=0.05, write_timeout_s=1.0)
    recorder = Recorder(store, tmp_path / "spill", limits)
    recorder.start()
    try:
        store.hang = True
        recorder.put("symbols", symbols(0, 10))
        until(lambda: store.interrupts == 1)
        assert recorder.stats.interrupted_writes == 1
        until(lambda: not recorder.stats.store_up)  # the broken-off write fails in the writer
        for batch in range(10):  # more than the queue holds arrives while the store is frozen
            recorder.put("symbols", symbols(10 + batch * 50, 50))
        until(
            lambda: (
                recorder.stats.spilled_rows + recorder.stats.queued_rows == 510
                and recorder.stats.queued_rows <= QUEUE_ROWS
            )
        )
        store.hang = False
        assert recorder.flush(5)
        assert store.symbols() == symbols(0, 510).column("symbol").to_pylist()  # once, in order
        assert (recorder.stats.lost_rows, recorder.stats.interrupted_writes) == (0, 1)
    finally:
        recorder.stop(timeout_s=5)


def test_stopping_while_a_write_hangs_spills_what_is_held(
    store: FlakyStore, tmp_path: Path
) -> None:
    recorder = Recorder(
        store, tmp_path / "spill", RecorderLimits(QUEUE_ROWS, flush_s=0.05, write_timeout_s=600)
    )
    recorder.start()
    store.hang = True
    recorder.put("symbols", symbols(0, 10))
    assert store.in_call.wait(5)
    recorder.put("symbols", symbols(10, 20))  # queued behind the hung write
    recorder.stop(timeout_s=0.5)
    assert store.interrupts == 1
    assert recorder._thread is not None
    assert not recorder._thread.is_alive()
    assert recorder.stats.spilled_rows == 30
    files = sorted((tmp_path / "spill").glob("*.parquet"))
    assert sum(pq.read_table(f).num_rows for f in files) == 30


def test_a_burst_is_written_in_batches_of_at_most_write_rows_in_order(
    store: FlakyStore, tmp_path: Path
) -> None:
    """A catch-up queues many tables at once: no store write takes more than write_rows."""
    store.delay_s = 0.02  # the burst queues up while the first write runs
    limits = RecorderLimits(10_000, flush_s=0.05, write_rows=250)
    recorder = Recorder(store, tmp_path / "spill", limits)
    recorder.start()
    try:
        for first in range(0, 3_000, 300):  # tables larger and smaller than a batch
            recorder.put("symbols", symbols(first, 300))
        assert recorder.flush(timeout_s=30)
    finally:
        recorder.stop(timeout_s=5)
    sizes = [t.num_rows for t in store.written["symbols"]]
    assert max(sizes) <= 250
    assert store.symbols() == [f"S{i:05d}" for i in range(3_000)]
    assert recorder.stats.written_rows == 3_000
    assert recorder.stats.lost_rows == 0


def test_a_producer_waits_for_room_until_the_store_has_taken_the_rows(
    store: FlakyStore, tmp_path: Path
) -> None:
    store.delay_s = 0.05
    recorder = Recorder(store, tmp_path / "spill", RecorderLimits(10_000, write_rows=100))
    recorder.start()
    try:
        for first in range(0, 2_000, 500):
            recorder.put("symbols", symbols(first, 500))
        assert recorder.backlog_rows() > 600
        assert recorder.wait_for_room(600, timeout_s=30)
        assert recorder.backlog_rows() <= 600
        assert len(store.symbols()) >= 1_400
        store.up = False  # nobody waits on a store that is down: rows spill instead
        recorder.put("symbols", symbols(5_000, 5_000))
        assert recorder.wait_for_room(0, timeout_s=30)
    finally:
        store.up = True
        recorder.stop(timeout_s=5)
