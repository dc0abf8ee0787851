"""``tapescan bench fanout``: real WebSocket clients on 127.0.0.1 against a real server process.

The server runs as a subprocess (simulated market, wall-clock pace, deltas stamped with the wall
time at the end of their cycle); the reading clients run in this process and the idle ones in
another (ops/idle_clients.py), as on other machines they would. Reported: delivery latency
(cycle end to client receipt), the server's CPU and RSS, and what idle (never-reading) clients
cost the server and the other clients. With idle clients, windows alternate: the readers alone,
with the idle clients, alone again, ... for a number of rounds, and each side's samples are pooled
(the simulated market changes through the session, and the p99 of one 60 s window rests on its
slowest cycle or two).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from tapescan.ops.bench import machine, percentile
from tapescan.ops.raw_ws_client import RawReader, open_readers

SCANS = ["top_gainers", "gappers_up", "high_rvol", "momentum_up"]
_decoder = msgspec.json.Decoder()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Latencies:
    """Samples of one measurement (bounded by its length: ~4 deltas/s per client)."""

    values_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)  # which cycle each sample belongs to
    began_ns: int = 0

    def summary(self) -> dict[str, Any]:
        if not self.values_ms:
            return {"count": 0}
        return {
            "count": len(self.values_ms),
            "p50_ms": round(percentile(self.values_ms, 50), 3),
            "p99_ms": round(percentile(self.values_ms, 99), 3),
            "max_ms": round(max(self.values_ms), 3),
            "median_delta_bytes": statistics.median(self.sizes),
            "slowest_cycles": self.slowest_cycles(),
        }

    def slowest_cycles(self, count: int = 3) -> list[dict[str, float]]:
        """The cycles with the latest last delivery, and when in the window they came."""
        worst: dict[int, float] = {}
        for sent, value in zip(self.sent_ns, self.values_ms, strict=True):
            worst[sent] = max(value, worst.get(sent, 0.0))
        slowest = sorted(worst.items(), key=lambda item: item[1], reverse=True)[:count]
        return [
            {"at_s": round((sent - self.began_ns) / 1e9, 1), "max_ms": round(value, 3)}
            for sent, value in slowest
        ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    def __init__(self, symbols: int, port: int, workdir: str) -> None:
        env = {**os.environ, "TAPESCAN_WS_STAMP_FRAMES": "true", "TAPESCAN_WS_LAG_TIMEOUT_S": "30"}
        self.url = f"127.0.0.1:{port}"
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                "-m",
                "tapescan",
                "run",
                "--symbols",
                str(symbols),
                "--port",
                str(port),
                "--start",
                "2026-11-24T10:00:00-05:00",
                "--speed",
                "1",
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError("the server exited during start-up")
                with contextlib.suppress(httpx.TransportError):
                    health = (await client.get(f"http://{self.url}/api/v1/health")).json()
                    if health["scans"]["cycles"] >= 2:
                        return
                await asyncio.sleep(0.5)
        raise RuntimeError("the server did not warm up in time")

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            health: dict[str, Any] = (await client.get(f"http://{self.url}/api/v1/health")).json()
            return health

    async def wait_for_clients(self, count: int, attempts: int = 150) -> None:
        """Poll the server (another process) until it counts ``count`` WebSocket clients."""
        for _ in range(attempts):
            if (await self.health())["clients"] == count:
                return
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Readers:
    """Reading clients (raw_ws_client) that read from the moment they connect; samples count
    only while recording, so connection set-up never shows up as latency."""

    def __init__(self) -> None:
        self.recording: Latencies | None = None
        self.connections: list[RawReader] = []

    def sink(self, received_ns: int, payload: bytes) -> None:
        into = self.recording
        if into is None or not payload.startswith(b'{"type":"delta"'):
            return
        # sent_ns is the delta's last key: read it without decoding the whole frame.
        marker = payload.rfind(b'"sent_ns":')
        if marker < 0:
            return
        sent_ns = int(payload[marker + 10 : payload.index(b"}", marker)])
        into.values_ms.append((received_ns - sent_ns) / 1e6)
        into.sizes.append(len(payload))
        into.sent_ns.append(sent_ns)

    async def connect(self, host: str, port: int, count: int, scans: list[str]) -> None:
        subscribe = msgspec.json.encode({"op": "subscribe", "scans": scans})
        self.connections += await open_readers(host, port, count, subscribe, self.sink)

    def stop(self) -> None:
        for reader in self.connections:
            reader.close()


class IdleProcess:
    """Idle clients (ops/idle_clients.py) in a process of their own, held until ``close``."""

    def __init__(self, url: str, count: int, scans: list[str]) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "tapescan.ops.idle_clients", url, str(count), *scans],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        if line.strip() != b"ready":
            self.close()
            raise RuntimeError("the idle clients could not connect")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


async def _measure(
    server: ServerProcess, readers: Readers, seconds: float, settle_s: float = 3.0
) -> tuple[Latencies, dict[str, Any]]:
    await asyncio.sleep(settle_s)  # let snapshots and any backlog of the set-up drain first
    latencies = Latencies(began_ns=time.time_ns())
    health_before = await server.health()
    cycles_before = health_before["scans"]["cycles"]
    cpu_before, began = server.cpu_seconds(), time.monotonic()
    client_cpu_before = time.process_time()
    readers.recording = latencies
    await asyncio.sleep(seconds)
    readers.recording = None
    elapsed = time.monotonic() - began
    health = await server.health()
    return latencies, {
        "cpu_percent": round(100 * (server.cpu_seconds() - cpu_before) / elapsed, 1),
        "client_process_cpu_percent": round(
            100 * (time.process_time() - client_cpu_before) / elapsed, 1
        ),
        "seconds": round(elapsed, 1),
        # A stalled scan loop shows here (and as fewer samples), not as better latency.
        "scan_cycles": health["scans"]["cycles"] - cycles_before,
        "clients_connected_at_end": health["clients"],
        "gc": gc_during(health_before["gc"], health["gc"], latencies.began_ns),
        "server_writes": server_writes(health["fanout_cycles"], latencies),
    }


def server_writes(cycles: list[dict[str, Any]], latencies: Latencies) -> dict[str, Any]:
    """How long the server took to write each cycle of the window (from its sent_ns): to the
    clients that keep up, and to all; and for the window's slowest cycles, the server's part."""
    sampled = set(latencies.sent_ns)
    inside = {c["sent_ns"]: c for c in cycles if c["sent_ns"] in sampled}
    if not inside:
        return {"cycles": 0}
    readers = [c["readers_ms"] for c in inside.values()]
    everyone = [c["all_ms"] for c in inside.values()]
    slowest = []
    for cycle in latencies.slowest_cycles():
        sent = latencies.began_ns + round(cycle["at_s"] * 1e9)
        match = min(inside, key=lambda s: abs(s - sent))
        slowest.append(
            {
                "at_s": cycle["at_s"],
                "delivered_ms": cycle["max_ms"],
                "readers_written_ms": inside[match]["readers_ms"],
            }
        )
    return {
        "cycles": len(inside),
        "readers_written_ms": {"p50": round(percentile(readers, 50), 3), "max": max(readers)},
        "all_written_ms": {"p50": round(percentile(everyone, 50), 3), "max": max(everyone)},
        "slowest_cycles": slowest,
    }


def gc_during(before: dict[str, Any], after: dict[str, Any], began_ns: int) -> dict[str, Any]:
    """The server's garbage collections between two health answers: counts, time stopped and
    the pauses of 1 ms or more (seconds into the window), to set beside the slowest cycles."""
    began = datetime.datetime.fromtimestamp(began_ns / 1e9, tz=datetime.UTC)
    seen = {(p["at"], p["generation"]) for p in before["long_pauses"]}
    return {
        "collections": [
            a - b for a, b in zip(after["collections"], before["collections"], strict=True)
        ],
        "pause_ms": round(sum(after["pause_ms_total"]) - sum(before["pause_ms_total"]), 3),
        "long_pauses": [
            {
                "at_s": round(
                    (datetime.datetime.fromisoformat(p["at"]) - began).total_seconds(), 1
                ),
                "generation": p["generation"],
                "ms": p["ms"],
            }
            for p in after["long_pauses"]
            if (p["at"], p["generation"]) not in seen
        ],
    }


def _change_percent(after: Latencies, before: Latencies) -> float | None:
    if not after.values_ms or not before.values_ms:
        return None
    p99_after, p99_before = percentile(after.values_ms, 99), percentile(before.values_ms, 99)
    return round(100 * (p99_after - p99_before) / p99_before, 1)


def _pooled(windows: list[Latencies]) -> Latencies:
    pooled = Latencies()
    for window in windows:
        pooled.values_ms += window.values_ms
        pooled.sizes += window.sizes
        pooled.sent_ns += window.sent_ns
    return pooled


def _pooled_summary(windows: list[Latencies]) -> dict[str, Any]:
    summary = _pooled(windows).summary()
    summary.pop("slowest_cycles", None)  # times within different windows: not comparable
    return summary


async def _idle_rounds(
    server: ServerProcess,
    readers: Readers,
    first_alone: Latencies,
    idle: int,
    seconds: float,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Alternate windows with and without ``idle`` clients that never read, ``rounds`` times.

    The simulated market changes through the session and the p99 of one window rests on its
    few slowest cycles, so one window with idle clients is no fair match for one without: the
    windows alternate (alone, idle, alone, ...) and each side's samples are pooled.
    """
    alone, with_idle = [first_alone], []
    idle_windows, alone_windows = [], []
    for round_ in range(1, rounds + 1):
        progress(f"round {round_}/{rounds}: {idle} clients that never read, for {seconds:.0f} s")
        clients_before = (await server.health())["clients"]
        rss_before = server.rss_mb()
        idlers = IdleProcess(server.url, idle, ["*"])
        try:
            await idlers.ready()
            latencies, stats = await _measure(server, readers, seconds)
            rss_growth = server.rss_mb() - rss_before
            stats["idle_process_cpu_s"] = round(cpu_seconds(idlers.process.pid), 2)
        finally:
            idlers.close()
        await server.wait_for_clients(clients_before)
        with_idle.append(latencies)
        idle_windows.append(
            {"latency": latencies.summary(), **stats, "rss_growth_mb": round(rss_growth, 1)}
        )
        progress(f"round {round_}/{rounds}: the readers alone again")
        rss_before = server.rss_mb()
        latencies, stats = await _measure(server, readers, seconds)
        alone.append(latencies)
        # The RSS a window without idle clients moves by: the noise the idle windows' is read in.
        stats["rss_growth_mb"] = round(server.rss_mb() - rss_before, 1)
        alone_windows.append({"latency": latencies.summary(), **stats})
    pooled_idle, pooled_alone = _pooled(with_idle), _pooled(alone)
    return {
        "with_idle_clients": {
            "idle_clients": idle,
            "rounds": rounds,
            "latency": _pooled_summary(with_idle),
            "rss_growth_mb": max(w["rss_growth_mb"] for w in idle_windows),
            "rss_growth_mb_median": statistics.median(w["rss_growth_mb"] for w in idle_windows),
            "p99_change_percent": _change_percent(pooled_idle, pooled_alone),
            "windows": idle_windows,
        },
        "clients_alone": {
            "windows_pooled": len(alone),
            "latency": _pooled_summary(alone),
            "windows_after_idle": alone_windows,
        },
    }


async def _bench(
    symbols: int,
    clients: int,
    idle: int,
    seconds: float,
    rounds: int,
    port: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        server = ServerProcess(symbols, port, workdir)
        try:
            progress(f"starting the server ({symbols} symbols) and waiting for warm-up")
            await server.ready()
            rss_start = server.rss_mb()
            progress(f"connecting {clients} clients")
            readers = Readers()
            await readers.connect("127.0.0.1", port, clients, SCANS)
            baseline, baseline_cpu = await _measure(server, readers, seconds)
            report: dict[str, Any] = {
                "clients": {
                    "latency": baseline.summary(),
                    **baseline_cpu,
                    "rss_mb_before_clients": round(rss_start, 1),
                    "rss_mb": round(server.rss_mb(), 1),
                    "rss_growth_mb": round(server.rss_mb() - rss_start, 1),
                },
            }
            if idle:
                report |= await _idle_rounds(
                    server, readers, baseline, idle, seconds, rounds, progress
                )
            readers.stop()
            return report
        finally:
            server.stop()


def bench_fanout(
    symbols: int,
    clients: int,
    idle: int,
    seconds: float,
    progress: Callable[[str], None],
    rounds: int = 3,
) -> dict[str, Any]:
    report = asyncio.run(_bench(symbols, clients, idle, seconds, rounds, free_port(), progress))
    return {
        "benchmark": "fanout",
        "machine": machine(),
        "inputs": {
            "symbols": symbols,
            "clients": clients,
            "idle_clients": idle,
            "scans_per_client": SCANS,
            "seconds": seconds,
            "idle_rounds": rounds if idle else 0,
            "server": "separate process on 127.0.0.1, wall-clock pace",
        },
        **report,
        "target": {
            "p99_ms_at_most": 100,
            "rss_growth_mb_below": 150,
            "idle_rss_growth_mb_below": 30,
            "idle_p99_within_percent": 20,
        },
    }
