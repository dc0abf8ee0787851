"""History reads while the store is down or hung: a JSON 503, within the timeout, in-process
(httpx over ASGI) against a real node with a real DuckDB store."""

from __future__ import annotations

import datetime as dt
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa
import pytest

from tapescan.config import Settings
from tapescan.store.history import History

if TYPE_CHECKING:
    from tapescan.node import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    settings = Settings(
        sim_symbols=50,
        data_dir=tmp_path,
        start=dt.datetime(2026, 11, 24, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        history_timeout_s=0.5,
        history_max_reads=2,
    )
    with warnings.catch_warnings():
        # uvicorn's legacy WebSocket module warns on import (see api/ws_transport.py)
        warnings.simplefilter("ignore", DeprecationWarning)
        from tapescan.node import Node  # noqa: PLC0415

    running = Node(settings)
    yield running
    running.store.close()


def client(node: Node) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.app), base_url="http://127.0.0.1:8000"
    )


HISTORY_READS = [
    "/api/v1/scans/top_gainers/events",
    "/api/v1/scans/top_gainers/results?at=2026-11-24T15:00:00Z",
    "/api/v1/symbols/{symbol}/bars",
    "/api/v1/symbols/{symbol}/bars?interval=1d",
]


@pytest.mark.parametrize("path", HISTORY_READS)
async def test_reads_while_the_store_is_down_answer_503_json(node: Node, path: str) -> None:
    node.store.close()  # the database is gone
    async with client(node) as http:
        response = await http.get(path.format(symbol=node.universe.symbols[0]))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "store_unavailable"


class HungReader:
    """A database that never answers (until released at the end of the test)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        self.calls += 1
        self.release.wait(30)
        return schema.empty_table()


@pytest.mark.parametrize("path", HISTORY_READS)
async def test_a_hung_store_answers_503_within_the_timeout(node: Node, path: str) -> None:
    hung = HungReader()
    node.history = History(hung)
    try:
        async with client(node) as http:
            began = time.monotonic()
            answers = [
                await http.get(path.format(symbol=node.universe.symbols[0])) for _ in range(4)
            ]
            elapsed = time.monotonic() - began
        assert [a.status_code for a in answers] == [503] * 4
        assert {a.json()["error"] for a in answers} == {"history_timeout"}
        assert elapsed < 4 * 0.5 + 1.5
        assert hung.calls <= 2  # hung reads hold their threads: no more than history_max_reads
    finally:
        hung.release.set()
