"""Fan-out of scan frames to WebSocket clients: shared frames, bounded queues, coalescing.

Publishing never waits: a frame is appended to each subscriber's queue or, when that queue is
full, the client's queued frames are dropped and it is marked lagging. A lagging client gets one
fresh snapshot of each scan it follows as soon as its socket has taken what it was sending, and
is disconnected if it stays behind past the lag timeout. A slow client never delays the others.

Worst-case memory: clients x queue_frames x one reference; the frames themselves are shared
(a delta of a 50-row scan is ~1-2 KB, encoded once per format).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from tapescan.publish.frames import Frame, WireFormat, delta_frame, error_frame, snapshot_frame
from tapescan.scan.delta import Delta, Snapshot


@dataclass(frozen=True, slots=True)
class FanoutLimits:
    queue_frames: int = 256  # per client without a direct transport; x ~2 KB shared frames
    lag_timeout_s: float = 30.0
    buffer_bytes: int = 256 * 1024  # per client's transport buffer before it counts as lagging


class Transport(Protocol):
    """The part of asyncio.WriteTransport the fan-out writes to."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


@dataclass(slots=True)
class ClientStats:
    sent_frames: int = 0
    dropped_frames: int = 0
    resnapshots: int = 0


class ClientSession:
    """One connected client: its subscriptions and its bounded queue of shared frames."""

    _ids = itertools.count(1)

    def __init__(self, hub: Hub, wire: WireFormat, limits: FanoutLimits) -> None:
        self.id = next(self._ids)
        self.wire = wire
        self.scans: set[str] = set()
        self.stats = ClientStats()
        self.lagging_since: float | None = None
        self._hub = hub
        self._limits = limits
        self._queue: deque[Frame] = deque()
        self._ready = asyncio.Event()
        self._closer: Callable[[], None] | None = None
        self.transport: Transport | None = None
        # Bytes the kernel still holds for the peer (sent, not yet acknowledged), when known.
        self.kernel_queue: Callable[[], int] | None = None
        self.closed = False  # its transport refused a write: nothing more is sent

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closer = closer

    def close(self) -> None:
        """Ask the connection to close (the hub has already forgotten this client)."""
        if self._closer is not None:
            self._closer()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, frame: Frame) -> None:
        """Send or queue ``frame`` unless the client is lagging; overflow turns it lagging."""
        if self.lagging_since is not None:
            self.stats.dropped_frames += 1
            return
        if self.transport is not None:
            self._write(self.transport, frame)
            return
        if len(self._queue) >= self._limits.queue_frames:
            self.stats.dropped_frames += len(self._queue) + 1
            self._queue.clear()
            self.lagging_since = time.monotonic()
            self._ready.set()
            return
        self._queue.append(frame)
        self._ready.set()

    def offer_many(self, frames: list[Frame], data: bytes | None = None) -> None:
        """Several frames of one cycle: one write (one system call) for a direct client.

        ``data``: the frames already joined in this client's wire format (shared by every
        client that follows the same scans, so it is joined once a cycle)."""
        if self.transport is None or self.lagging_since is not None:
            for frame in frames:
                self.offer(frame)
            return
        if data is None:
            self._write(self.transport, *frames)
        else:
            self._write_data(self.transport, data, len(frames))

    @property
    def backlogged(self) -> bool:
        """Lagging, or its peer has not taken what it was last given: served last."""
        if self.lagging_since is not None or self.closed:
            return True
        if self.transport is None:
            return bool(self._queue)
        if self.transport.get_write_buffer_size() > 0:
            return True
        # A peer that stopped reading is hidden at first: the kernel takes its bytes until the
        # socket's buffers fill (seconds). Bytes of an earlier cycle still unacknowledged now
        # (a cycle later) show it at once, so it is not written in among the readers.
        return self.kernel_queue is not None and self.kernel_queue() > 0

    def _write(self, transport: Transport, *frames: Frame) -> None:
        self._write_data(transport, b"".join(f.framed(self.wire) for f in frames), len(frames))

    def _write_data(self, transport: Transport, data: bytes, frames: int) -> None:
        if self.closed or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self._limits.buffer_bytes:
            self.stats.dropped_frames += frames
            self.lagging_since = time.monotonic()
            return
        try:
            transport.write(data)
        except (RuntimeError, OSError):
            # The connection is being torn down under us (e.g. the WebSocket library half-closed
            # it after a missed ping: write() after write_eof() raises). Stop writing to it; the
            # connection's handler disconnects it from the hub.
            self.closed = True
            return
        self.stats.sent_frames += frames

    def catch_up(self) -> bool:
        """For a direct client that lagged: once its buffer has drained, send fresh snapshots."""
        transport = self.transport
        if transport is None or self.lagging_since is None:
            return False
        if transport.get_write_buffer_size() > self._limits.buffer_bytes // 4:
            return False
        self.lagging_since = None
        self.stats.resnapshots += 1
        for scan in sorted(self.scans):
            frame = self._hub.snapshot_frame(scan)
            if frame is not None:
                self._write(transport, frame)
        return True

    async def next_frame(self) -> Frame:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.lagging_since is not None:
                # Caught up: everything queued before the overflow is gone; start afresh.
                self.lagging_since = None
                self.stats.resnapshots += 1
                for scan in sorted(self.scans):
                    frame = self._hub.snapshot_frame(scan)
                    if frame is not None:
                        self._queue.append(frame)
                continue
            self._ready.clear()
            await self._ready.wait()


STAMPED_CYCLES = 128  # timings of the last stamped cycles kept (benchmarks; ~10 KB)


@dataclass(frozen=True, slots=True)
class CycleTiming:
    """When a stamped cycle's writes were done, in ns after its ``sent_ns``."""

    sent_ns: int
    readers_ns: int  # every client that keeps up has its bytes
    all_ns: int  # backlogged clients too


class Hub:
    def __init__(
        self,
        snapshot_of: Callable[[str], Snapshot | None],
        limits: FanoutLimits | None = None,
    ) -> None:
        self.limits = limits or FanoutLimits()
        self._snapshot_of = snapshot_of
        self.clients: set[ClientSession] = set()
        self._subscribers: dict[str, set[ClientSession]] = {}
        self._snapshots: dict[str, tuple[int, Frame]] = {}
        # Filled only when cycles are stamped (``ws_stamp_frames``), so a benchmark can tell
        # time spent writing in the server from time spent on the way to the client.
        self.cycle_timings: deque[CycleTiming] = deque(maxlen=STAMPED_CYCLES)

    def connect(self, wire: WireFormat) -> ClientSession:
        client = ClientSession(self, wire, self.limits)
        self.clients.add(client)
        return client

    def disconnect(self, client: ClientSession) -> None:
        self.clients.discard(client)
        for scan in client.scans:
            self._subscribers.get(scan, set()).discard(client)
        client.scans.clear()

    def snapshot_frame(self, scan: str) -> Frame | None:
        """The current snapshot of ``scan``, encoded once per sequence number."""
        snapshot = self._snapshot_of(scan)
        if snapshot is None:
            return None
        cached = self._snapshots.get(scan)
        if cached is not None and cached[0] == snapshot.seq:
            return cached[1]
        frame = snapshot_frame(snapshot)
        self._snapshots[scan] = (snapshot.seq, frame)
        return frame

    def subscribe(self, client: ClientSession, scans: Iterable[str]) -> None:
        for scan in scans:
            frame = self.snapshot_frame(scan)
            if frame is None:
                client.offer(
                    error_frame("unknown_scan", f"no scan '{scan}'; GET /api/v1/scans lists them")
                )
                continue
            client.scans.add(scan)
            self._subscribers.setdefault(scan, set()).add(client)
            client.offer(frame)

    def unsubscribe(self, client: ClientSession, scans: Iterable[str]) -> list[str]:
        removed = []
        for scan in scans:
            if scan in client.scans:
                client.scans.discard(scan)
                self._subscribers.get(scan, set()).discard(client)
                removed.append(scan)
        return removed

    def publish(self, deltas: Iterable[Delta], sent_ns: int | None = None) -> None:
        """Offer each delta to its subscribers; ``sent_ns`` (wall time) is added for benchmarks.

        A client gets all its frames of the cycle in one write, so the cost per cycle grows with
        the clients, not with clients x scans. Frames are encoded when the first client needs
        them, and clients that keep up are written to first: a scan only backlogged clients
        follow is encoded after every reading client has its bytes, and one only lagging clients
        follow (their frames are dropped anyway) is never encoded.
        """
        changed = [d for d in deltas if self._subscribers.get(d.scan)]
        if not changed:
            return
        encoded: list[Frame | None] = [None] * len(changed)
        # Clients that follow the same scans get the same frames, joined once per wire format.
        batches: dict[tuple[frozenset[str], WireFormat], tuple[list[Frame], bytes]] = {}

        def batch_for(client: ClientSession) -> tuple[list[Frame], bytes]:
            key = (frozenset(client.scans), client.wire)
            found = batches.get(key)
            if found is None:
                frames = []
                for i, delta in enumerate(changed):
                    if delta.scan in client.scans:
                        frame = encoded[i]
                        if frame is None:
                            frame = encoded[i] = delta_frame(delta, sent_ns)
                        frames.append(frame)
                found = batches[key] = (frames, b"".join(f.framed(client.wire) for f in frames))
            return found

        backlogged: list[ClientSession] = []
        lagging: list[ClientSession] = []
        for client in self.clients:
            if not client.scans:
                continue
            if client.lagging_since is not None:
                lagging.append(client)  # counted after the writes
            elif client.backlogged:
                backlogged.append(client)
            else:
                frames, data = batch_for(client)
                if frames:
                    client.offer_many(frames, data)
        readers_done_ns = time.time_ns()
        # A write to a client whose socket is full only appends to its buffer, but it must not
        # stand in front of the clients that are reading.
        for client in backlogged:
            frames, data = batch_for(client)
            if frames:
                client.offer_many(frames, data)
        for client in lagging:
            client.stats.dropped_frames += sum(d.scan in client.scans for d in changed)
        if sent_ns is not None:
            self.cycle_timings.append(
                CycleTiming(sent_ns, readers_done_ns - sent_ns, time.time_ns() - sent_ns)
            )

    def broadcast(self, frame: Frame) -> None:
        for client in self.clients:
            client.offer(frame)

    def scans_replaced(self, changed: Iterable[str], deleted: Iterable[str]) -> None:
        """Definitions changed: subscribers get a fresh snapshot, or an error if it was deleted."""
        for scan in changed:
            self._snapshots.pop(scan, None)
            for client in self._subscribers.get(scan, set()):
                frame = self.snapshot_frame(scan)
                if frame is not None:
                    client.offer(frame)
        for scan in deleted:
            self._snapshots.pop(scan, None)
            for client in list(self._subscribers.pop(scan, set())):
                client.scans.discard(scan)
                client.offer(error_frame("unknown_scan", f"scan '{scan}' was deleted"))

    def service(self) -> None:
        """Resnapshot direct clients whose buffers have drained (called a few times a second)."""
        for client in self.clients:
            client.catch_up()

    def lagging_too_long(self, now: float | None = None) -> list[ClientSession]:
        moment = time.monotonic() if now is None else now
        timeout = self.limits.lag_timeout_s
        return [
            c
            for c in self.clients
            if c.lagging_since is not None and moment - c.lagging_since > timeout
        ]
