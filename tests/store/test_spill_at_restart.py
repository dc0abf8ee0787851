"""A restart with rows left spilled (the store was down when the last process stopped) writes
them back before it reads today's bars from the store: they are recovered, not asked of the
feed again and stored twice.

In-process nodes on the simulated market (50 symbols) from 10:00 ET, each on the same data
directory. After the first, its bars from 09:40 are moved from the store into a spill file, as
an outage at stop leaves them; the second start's write-back is made slow (as a large one is),
so that a read of today's bars before it would miss them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.parquet as pq
import pytest

from tapescan.config import Settings
from tapescan.market.calendar import et_to_ns, ns_to_utc
from tapescan.store.duck import DuckDbStore
from tapescan.store.open import DUCKDB_FILE
from tapescan.store.recorder import Recorder
from tapescan.store.tables import MINUTE_BARS

if TYPE_CHECKING:
    from tapescan.node import Node

DAY = dt.date(2026, 11, 24)
START = dt.datetime(2026, 11, 24, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
SPILL_FROM = ns_to_utc(et_to_ns(DAY, dt.time(9, 40)))
WRITE_BACK_S = 1.5


async def run_until_warm(settings: Settings) -> Node:
    """Start a node, wait until it has warmed up and recorded what it applied, stop it."""
    with warnings.catch_warnings():
        # uvicorn's legacy WebSocket module warns on import (see api/ws_transport.py)
        warnings.simplefilter("ignore", DeprecationWarning)
        from tapescan.node import Node, listen_socket  # noqa: PLC0415

    node = Node(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(node.run(stop, listen_socket("127.0.0.1", 0)))
    try:
        async with asyncio.timeout(120):
            await node._warmed_up.wait()
        assert await asyncio.to_thread(node.recorder.flush, 60)
    finally:
        stop.set()
        await running
    return node


def minute_rows(path: Path) -> tuple[int, int]:
    """(rows, distinct keys) of today's minute bars in the store."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        found = con.execute(
            "SELECT count(*), count(DISTINCT (symbol, ts)) FROM minute_bars WHERE session = ?",
            [DAY],
        ).fetchone()
    finally:
        con.close()
    assert found is not None
    return int(found[0]), int(found[1])


def test_spilled_rows_are_written_back_before_todays_bars_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(sim_symbols=50, data_dir=tmp_path, start=START)
    asyncio.run(run_until_warm(settings))
    database = tmp_path / DUCKDB_FILE
    rows, keys = minute_rows(database)
    assert rows == keys > 0

    # what an outage at stop leaves: the newest bars in a spill file, not in the store
    store = DuckDbStore(database)
    try:
        spilled = store.read(
            "SELECT * FROM minute_bars WHERE session = %s AND ts >= %s",
            [DAY, SPILL_FROM],
            MINUTE_BARS.schema,
        )
    finally:
        store.close()
    con = duckdb.connect(str(database))
    try:
        con.execute("DELETE FROM minute_bars WHERE session = ? AND ts >= ?", [DAY, SPILL_FROM])
    finally:
        con.close()
    assert spilled.num_rows > 0
    (tmp_path / "spill").mkdir(exist_ok=True)
    pq.write_table(spilled, tmp_path / "spill" / "000000000000-minute_bars.parquet")

    original = Recorder._restore_spilled

    def slow_restore(self: Recorder, deadline: float) -> bool:
        if self._spill_files():
            time.sleep(WRITE_BACK_S)  # a large write-back
        return original(self, deadline + WRITE_BACK_S)

    monkeypatch.setattr(Recorder, "_restore_spilled", slow_restore)
    again: Any = asyncio.run(run_until_warm(settings))
    assert again.recorder.stats.restored_rows == spilled.num_rows
    assert again.recovery.recovered_bars == rows  # the spilled ones included
    assert minute_rows(database) == (rows, rows)  # each bar once
