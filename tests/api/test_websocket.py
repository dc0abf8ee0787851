"""The WebSocket protocol with a real client against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tapescan.ops.raw_ws_client import client_frame, open_readers, take_frames
from tests.api.server import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("ws"))
    yield running
    running.stop()


def ws_url(server: Server, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws{query}"


async def receive(
    ws: ClientConnection, kind: str | None = None, scan: str | None = None
) -> dict[str, Any]:
    """The next message (of a type and scan, if given), skipping others."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
        if (kind is None or message["type"] == kind) and (
            scan is None or message.get("scan") == scan
        ):
            return message


class ClientTable:
    """What a client holds for one scan: applies snapshots and deltas as docs/protocol.md says."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.seq: int = snapshot["seq"]
        self.rows: dict[str, list[Any]] = {row[0]: row for row in snapshot["rows"]}
        self.order: list[str] = [row[0] for row in snapshot["rows"]]

    def apply(self, delta: dict[str, Any]) -> bool:
        if delta["prev_seq"] != self.seq:
            return False
        for symbol in delta["remove"]:
            self.rows.pop(symbol, None)
        for row in delta["upsert"]:
            self.rows[row[0]] = row
        self.order = delta.get("order") or [s for s in self.order if s in self.rows]
        self.seq = delta["seq"]
        return True

    def table(self) -> list[list[Any]]:
        return [self.rows[s] for s in self.order]


async def test_snapshot_then_deltas_rebuild_exactly_a_fresh_snapshot_at_the_same_seq(
    server: Server,
) -> None:
    async with connect(ws_url(server)) as ws:
        status = await receive(ws, "status")
        assert status["feed"]["name"] == "sim"
        await ws.send(json.dumps({"op": "subscribe", "scans": ["*"]}))
        tables: dict[str, ClientTable] = {}
        applied = 0
        while applied < 30:
            message = await receive(ws)
            if message["type"] == "snapshot":
                tables[message["scan"]] = ClientTable(message)
            elif message["type"] == "delta":
                assert tables[message["scan"]].apply(message), "a delta did not follow its seq"
                applied += 1
        for scan, table in tables.items():
            await ws.send(json.dumps({"op": "resync", "scan": scan}))
            while True:
                message = await receive(ws)
                if message["type"] == "delta":
                    assert tables[message["scan"]].apply(message)
                elif message["type"] == "snapshot" and message["scan"] == scan:
                    break
            assert message["seq"] == table.seq
            assert message["rows"] == table.table(), scan


async def test_a_forced_gap_is_detected_and_resync_recovers(server: Server) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"op": "subscribe", "scans": ["top_gainers", "high_rvol"]}))
        scan = "top_gainers"
        table = ClientTable(await receive(ws, "snapshot", scan))
        await receive(ws, "delta", scan)  # lost on purpose
        gap = await receive(ws, "delta", scan)
        assert not table.apply(gap)
        await ws.send(json.dumps({"op": "resync", "scan": scan}))
        table = ClientTable(await receive(ws, "snapshot", scan))
        following = await receive(ws, "delta", scan)
        assert table.apply(following)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        (json.dumps({"op": "dance"}), "unknown_op"),
        (json.dumps({"op": "subscribe", "scans": ["no_such_scan"]}), "unknown_scan"),
        (json.dumps({"op": "subscribe", "scans": "gappers_up"}), "bad_request"),
        (json.dumps({"op": "resync"}), "bad_request"),
        (json.dumps({"op": "ping", "pad": "x" * 70_000}), "frame_too_large"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_usable(
    server: Server, frame: str, code: str
) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(frame)
        error = await receive(ws, "error")
        assert error["code"] == code
        assert error["message"]
        await ws.send(json.dumps({"op": "ping"}))
        assert (await receive(ws, "pong"))["type"] == "pong"


async def test_unsubscribe_stops_deltas_of_that_scan(server: Server) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"op": "subscribe", "scans": ["*"]}))
        await receive(ws, "delta")
        await ws.send(json.dumps({"op": "unsubscribe", "scans": ["*"]}))
        answer = await receive(ws, "unsubscribed")
        assert len(answer["scans"]) == 18
        await ws.send(json.dumps({"op": "ping"}))
        while (message := await receive(ws))["type"] != "pong":
            assert message["type"] in {"delta", "status"}  # already queued before unsubscribing
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(receive(ws, "delta"), timeout=2.5)


async def test_messagepack_on_request(server: Server) -> None:
    async with connect(ws_url(server, "?format=msgpack")) as ws:
        await ws.send(msgspec.msgpack.encode({"op": "subscribe", "scans": ["gappers_up"]}))
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout=20)
            assert isinstance(raw, bytes)
            message = msgspec.msgpack.decode(raw)
            if message["type"] == "snapshot":
                break
        assert message["scan"] == "gappers_up"
        assert message["columns"][0] == "symbol"


def test_delta_frames_of_a_50_row_scan_are_small(server: Server, tmp_path: Path) -> None:
    async def sizes() -> list[int]:
        out: list[int] = []
        async with connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"op": "subscribe", "scans": ["*"]}))
            while len(out) < 40:
                raw = await asyncio.wait_for(ws.recv(), timeout=20)
                message = json.loads(raw)
                if message["type"] == "delta":
                    out.append(len(raw))
        return out

    measured = sorted(asyncio.run(sizes()))
    assert measured[len(measured) // 2] <= 2048


async def test_the_benchmarks_raw_reader_speaks_the_protocol(server: Server) -> None:
    received: list[dict[str, Any]] = []
    got_delta = asyncio.Event()

    def sink(_: int, payload: bytes) -> None:
        message = json.loads(payload)
        received.append(message)
        if message["type"] == "delta":
            got_delta.set()

    subscribe = json.dumps({"op": "subscribe", "scans": ["top_gainers"]}).encode()
    readers = await open_readers("127.0.0.1", server.port, 3, subscribe, sink)
    try:
        await asyncio.wait_for(got_delta.wait(), timeout=20)
    finally:
        for reader in readers:
            reader.close()
    snapshots = [m for m in received if m["type"] == "snapshot"]
    assert len(snapshots) == 3
    assert {m["scan"] for m in snapshots} == {"top_gainers"}


def test_a_client_that_stops_reading_lags_then_gets_a_fresh_snapshot_when_it_reads(
    server: Server,
) -> None:
    """A real peer that does not read: its bytes stay unacknowledged and its cycle pings
    unanswered past ws_behind_s (3 s), the server stops writing to it, and once it has read
    everything (and answered) it gets a fresh snapshot and deltas from there; meanwhile a
    reading client's deltas form an unbroken chain."""
    scan = "top_gainers"
    before = server.health(lambda h: True)["fanout"]
    idle = socket.socket()
    idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    idle.settimeout(20)
    idle.connect(("127.0.0.1", server.port))
    idle.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    received = bytearray()
    while b"\r\n\r\n" not in received:
        received += idle.recv(4096)
    assert received.startswith(b"HTTP/1.1 101")
    del received[: received.index(b"\r\n\r\n") + 4]
    idle.sendall(client_frame(json.dumps({"op": "subscribe", "scans": ["*"]}).encode()))

    async def read_along() -> list[int]:
        """A reading client on the same scan, until the idle one is lagging."""
        seqs = []
        async with connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"op": "subscribe", "scans": [scan]}))
            seqs.append((await receive(ws, "snapshot", scan))["seq"])
            while server.health(lambda h: True)["fanout"]["lagging"] == before["lagging"]:
                delta = await receive(ws, "delta", scan)
                assert delta["prev_seq"] == seqs[-1]  # no gap for the reader
                seqs.append(delta["seq"])
        return seqs

    try:
        reader_seqs = asyncio.run(read_along())
        assert len(reader_seqs) >= 3  # the idle client took a few cycles to show
        lagging = server.health(lambda h: True)["fanout"]
        assert lagging["dropped_frames"] > before["dropped_frames"]
        # Now it reads: the deltas written before it lagged, then a fresh snapshot of each
        # scan and deltas continuing from it.
        stream: list[dict[str, Any]] = []
        while not (
            len(resnapshot := [m for m in stream[1:] if m["type"] == "snapshot"]) >= 1
            and any(m["type"] == "delta" and m["prev_seq"] == resnapshot[0]["seq"] for m in stream)
        ):
            received += idle.recv(1 << 16)
            for opcode, payload in take_frames(received):
                if opcode == 0x9:
                    idle.sendall(client_frame(payload, opcode=0xA))
                elif opcode == 0x1:
                    message = json.loads(payload)
                    if message.get("scan") == scan:
                        stream.append(message)
        first, *rest = stream
        assert first["type"] == "snapshot"
        cut = next(i for i, m in enumerate(rest) if m["type"] == "snapshot")
        chain = [first["seq"]] + [m["seq"] for m in rest[:cut]]
        assert all(m["prev_seq"] == seq for m, seq in zip(rest[:cut], chain[:-1], strict=True))
        assert rest[cut]["seq"] > chain[-1]  # newer than what it had: it missed deltas
        after = server.health(lambda h: h["fanout"]["resnapshots"] > before["resnapshots"])
        assert after["fanout"]["lagging"] == before["lagging"]
    finally:
        idle.close()
