"""The fan-out benchmark's bookkeeping: samples, pooled windows, slowest cycles."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tapescan.ops.fanout_bench import (
    IdleProcess,
    Latencies,
    Readers,
    _change_percent,
    _pooled_summary,
    gc_during,
    server_writes,
)
from tapescan.ops.raw_ws_client import open_readers
from tests.api.server import start_server


def delta_payload(sent_ns: int, pad: int = 0) -> bytes:
    return b'{"type":"delta","scan":"s","upsert":[' + b"1," * pad + b'1],"sent_ns":%d}' % sent_ns


def test_samples_are_taken_from_deltas_only_while_recording() -> None:
    readers = Readers()
    readers.sink(5_000_000, delta_payload(1_000_000))  # not recording: ignored
    window = Latencies(began_ns=0)
    readers.recording = window
    readers.sink(3_000_000, delta_payload(1_000_000))
    readers.sink(4_000_000, b'{"type":"status","sent_ns":1}')  # not a delta
    readers.sink(9_000_000, delta_payload(2_000_000, pad=10))
    assert window.values_ms == [2.0, 7.0]
    assert window.sent_ns == [1_000_000, 2_000_000]
    assert window.sizes == [len(delta_payload(1_000_000)), len(delta_payload(2_000_000, pad=10))]


def test_slowest_cycles_rank_each_cycle_by_its_last_delivery() -> None:
    window = Latencies(began_ns=10_000_000_000)
    # three cycles, 1 s apart, two clients each
    for cycle, latencies in enumerate([(1.0, 2.0), (1.5, 9.0), (3.0, 0.5)]):
        for value in latencies:
            window.sent_ns.append(11_000_000_000 + cycle * 1_000_000_000)
            window.values_ms.append(value)
            window.sizes.append(100)
    assert window.slowest_cycles(2) == [{"at_s": 2.0, "max_ms": 9.0}, {"at_s": 3.0, "max_ms": 3.0}]


def test_pooled_windows_keep_every_sample_and_compare_p99() -> None:
    first, second = Latencies(), Latencies()
    for i in range(100):
        first.values_ms.append(1.0)
        second.values_ms.append(2.0 if i < 98 else 10.0)
        for window in (first, second):
            window.sizes.append(10)
            window.sent_ns.append(i)
    pooled = _pooled_summary([first, second])
    assert pooled["count"] == 200
    assert "slowest_cycles" not in pooled
    assert _change_percent(second, first) == 900.0  # p99 1.0 -> 10.0 (the last two samples)
    assert _change_percent(Latencies(), first) is None


async def test_idle_clients_hold_their_connections_from_their_own_process_until_closed(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    try:
        idle = IdleProcess(f"127.0.0.1:{server.port}", 3, ["*"])
        await idle.ready()
        server.health(lambda h: h["clients"] == 3, timeout_s=10)
        idle.close()
        assert idle.process.returncode == 0
        server.health(lambda h: h["clients"] == 0, timeout_s=20)
    finally:
        server.stop()


def test_gc_during_a_window_counts_only_its_own_collections() -> None:
    began_ns = 1_764_000_000_000_000_000  # 2025-11-24T16:00:00Z
    earlier = {"at": "2025-11-24T15:59:58+00:00", "generation": 2, "ms": 9.0, "collected": 1}
    inside = {"at": "2025-11-24T16:00:12.500000+00:00", "generation": 1, "ms": 2.5, "collected": 7}
    before = {
        "collections": [100, 9, 1],
        "pause_ms_total": [20.0, 5.0, 9.0],
        "long_pauses": [earlier],
    }
    after = {
        "collections": [160, 15, 1],
        "pause_ms_total": [31.5, 9.0, 9.0],
        "long_pauses": [earlier, inside],
    }
    during = gc_during(before, after, began_ns)
    assert during == {
        "collections": [60, 6, 0],
        "pause_ms": 15.5,
        "long_pauses": [{"at_s": 12.5, "generation": 1, "ms": 2.5}],
    }


def test_server_writes_set_the_servers_part_beside_each_slow_cycle() -> None:
    began = 1_000_000_000_000
    latencies = Latencies(began_ns=began)
    for cycle, delivered in enumerate([1.5, 4.0, 2.0]):
        sent = began + (cycle + 1) * 1_000_000_000
        for _ in range(3):
            latencies.values_ms.append(delivered)
            latencies.sizes.append(100)
            latencies.sent_ns.append(sent)
    cycles = [
        {"sent_ns": began - 1_000_000_000, "readers_ms": 9.0, "all_ms": 9.0},  # before the window
        {"sent_ns": began + 1_000_000_000, "readers_ms": 1.0, "all_ms": 1.2},
        {"sent_ns": began + 2_000_000_000, "readers_ms": 1.1, "all_ms": 3.0},
        {"sent_ns": began + 3_000_000_000, "readers_ms": 1.4, "all_ms": 1.5},
    ]
    writes = server_writes(cycles, latencies)
    assert writes["cycles"] == 3
    assert writes["readers_written_ms"] == {"p50": 1.1, "max": 1.4}
    assert writes["all_written_ms"]["max"] == 3.0
    assert writes["slowest_cycles"][0] == {
        "at_s": 2.0,
        "delivered_ms": 4.0,
        "readers_written_ms": 1.1,
    }


async def test_the_raw_reader_answers_a_ping_after_handing_on_the_data_before_it() -> None:
    """A server on 127.0.0.1 sends a text frame and a ping in one write: the reader's sink gets
    the text, and a pong with the ping's payload comes back."""
    events: list[str] = []
    pong: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        header = await reader.readexactly(6)  # the subscribe frame (masked, short)
        await reader.readexactly(header[1] & 0x7F)
        writer.write(b"\x81\x02hi" + bytes((0x89, 10)) + b"tc" + (7).to_bytes(8, "big"))
        first = await reader.readexactly(6)
        pong.set_result(await reader.readexactly(first[1] & 0x7F))
        events.append(f"pong opcode {first[0] & 0x0F}")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        readers = await open_readers(
            "127.0.0.1", port, 1, b"{}", lambda _, payload: events.append(payload.decode())
        )
        assert await asyncio.wait_for(pong, 10) == b"tc" + (7).to_bytes(8, "big")
        readers[0].close()
    assert events == ["hi", "pong opcode 10"]
