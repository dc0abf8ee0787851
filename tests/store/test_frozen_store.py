"""A PostgreSQL that freezes (stops answering, connections left open) never holds the recorder.

The private server is stopped with SIGSTOP mid-write: the kernel keeps the connection open and
acknowledged, so the write would wait forever. The recorder's watchdog breaks it off after
``write_timeout_s``; rows queue, spill to Parquet, and every one is written, once, after the
server is thawed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tapescan.store.postgres import PostgresStore
from tapescan.store.recorder import Recorder, RecorderLimits
from tests.store.private_postgres import PrivatePostgres, private_postgres
from tests.store.test_recorder import symbols, until

QUEUE_ROWS = 1_000


@pytest.fixture
def private() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def test_a_frozen_server_is_broken_off_and_loses_no_row(
    private: PrivatePostgres, tmp_path: Path
) -> None:
    store = PostgresStore(private.url(), schema="frozen")
    store.migrate()
    limits = RecorderLimits(QUEUE_ROWS, flush_s=0.1, write_timeout_s=2.0)
    recorder = Recorder(store, tmp_path / "spill", limits)
    recorder.start()
    try:
        recorder.put("symbols", symbols(0, 100))
        assert recorder.flush(10)
        private.freeze()
        try:
            began = time.monotonic()
            for batch in range(10):  # 5,000 rows: five times what the queue may hold
                recorder.put("symbols", symbols(100 + batch * 500, 500))
            until(lambda: recorder.stats.interrupted_writes >= 1, timeout_s=15)
            assert time.monotonic() - began < 10
            # settled: all but at most QUEUE_ROWS of the frozen-time rows spilled
            until(
                lambda: (
                    recorder.stats.spilled_rows + recorder.stats.queued_rows == 5_000
                    and recorder.stats.queued_rows <= QUEUE_ROWS
                ),
                timeout_s=30,
            )
            assert recorder.stats.spilled_rows > 0
            assert not recorder.stats.store_up
        finally:
            private.thaw()
        assert recorder.flush(60)
        stats = recorder.stats
        assert (stats.lost_rows, stats.spill_files, stats.queued_rows) == (0, 0, 0)
        assert stats.restored_rows == stats.spilled_rows > 0
        assert store.count("symbols") == 5_100
        stored = store.read(
            "SELECT symbol FROM symbols ORDER BY symbol", [], pa.schema([("symbol", pa.string())])
        )
        assert stored.column("symbol").to_pylist() == symbols(0, 5_100).column("symbol").to_pylist()
    finally:
        recorder.stop(timeout_s=10)
        store.close()
