"""Retention exports a whole session from the embedded store within its small buffer pool."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from tapescan.store.duck import DuckDbStore
from tapescan.store.tables import SCAN_EVENTS

DAY = dt.date(2026, 11, 24)


def test_a_session_larger_than_the_buffer_pool_exports_in_key_order(tmp_path: Path) -> None:
    store = DuckDbStore(tmp_path / "store.duckdb", 16)
    store.migrate()
    rng = np.random.default_rng(3)
    n = 30_000  # ~60 MB of payloads: a database-side sort would not fit in 16 MB
    scans = ["gappers_up", "high_rvol", "top_gainers"]
    for first in range(0, n, 5_000):
        rows = range(first, first + 5_000)
        store.write(
            "scan_events",
            pa.table(
                {
                    "session": pa.array([DAY] * 5_000, pa.date32()),
                    "scan": [scans[i % 3] for i in rows],
                    "seq": [n - i for i in rows],  # written against the key order
                    "asof_ns": [1_700_000_000_000_000_000 + i for i in rows],
                    "keyframe": [False] * 5_000,
                    "payload": [rng.bytes(2_000) for _ in rows],
                },
                schema=SCAN_EVENTS.schema,
            ),
        )
    exported = store.export_session("scan_events", DAY)
    store.close()
    assert exported.num_rows == n
    scans_out, seqs_out = exported.column("scan").to_pylist(), exported.column("seq").to_pylist()
    keys = list(zip(scans_out, seqs_out, strict=True))
    assert keys == sorted(keys)
