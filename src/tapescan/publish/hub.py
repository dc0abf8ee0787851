"""Fan-out of scan frames to WebSocket clients: shared frames, bounded queues, coalescing.

Publishing never waits: a frame is written to each subscriber's connection (or appended to its
queue), clients that keep up first. A client is lagging when its buffer passes its limit or when
bytes written to it more than ``behind_s`` ago are still unacknowledged by its kernel or unread
by its WebSocket stack (the ping that ends each cycle's write unanswered); from then on its
deltas are dropped, and once it has read everything it gets one fresh snapshot of each scan it
follows. A client that stays behind past the lag timeout is disconnected. A slow client never
delays the others.

Worst-case memory: clients x queue_frames x one reference; the frames themselves are shared
(a delta of a 50-row scan is ~1-2 KB, encoded once per format).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from tapescan.publish.frames import (
    Frame,
    WireFormat,
    cycle_of_pong,
    cycle_ping,
    delta_frame,
    error_frame,
    snapshot_frame,
)
from tapescan.scan.delta import Delta, Snapshot


@dataclass(frozen=True, slots=True)
class FanoutLimits:
    queue_frames: int = 256  # per client without a direct transport; x ~2 KB shared frames
    lag_timeout_s: float = 30.0
    buffer_bytes: int = 256 * 1024  # per client's transport buffer before it counts as lagging
    # A direct client whose peer has not taken (TCP) or not read (WebSocket ping) bytes written
    # this long ago is lagging.
    behind_s: float = 3.0
    # Pings a cycle at most (each costs the server one pong to read, ~30 us): with more pinged
    # clients than this, each is pinged every ceil(clients / ping_budget) cycles, staggered.
    ping_budget: int = 200


WRITE_LOG = 64  # writes remembered per direct client until acknowledged: 64 x ~120 B, ~8 KB
PING_LOG = 64  # cycle pings remembered per client until answered: 64 x ~120 B, ~8 KB


def remember(log: deque[tuple[int, int]], capacity: int, upto: int, at_ns: int) -> None:
    """Append (upto, at_ns) to a log of rising ``upto``s; when it is full, the last entry is
    stretched to ``upto`` and keeps its older time, so the oldest times stay exact."""
    if len(log) < capacity:
        log.append((upto, at_ns))
    else:
        log[-1] = (upto, log[-1][1])


class Standing(enum.Enum):
    """Where a client stands at a cycle: who is written first, who later, who not at all."""

    CURRENT = "current"  # its peer has taken and read everything: written first
    BACKLOGGED = "backlogged"  # bytes still on the way: written after the current clients
    LAGGING = "lagging"  # too far behind: its deltas are dropped until it catches up


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

    def add(self, other: ClientStats) -> None:
        self.sent_frames += other.sent_frames
        self.dropped_frames += other.dropped_frames
        self.resnapshots += other.resnapshots


@dataclass(frozen=True, slots=True)
class FanoutSummary:
    """The fan-out at a glance (``/health``): clients now, and frames since start-up."""

    clients: int
    lagging: int  # frames dropped until they catch up
    sent_frames: int
    dropped_frames: int
    resnapshots: int
    disconnected_lagging: int  # closed after staying behind past the lag timeout


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
        # Bytes the fan-out has handed to the transport, and when (a direct client): with what
        # is still unacknowledged they give the age of the oldest byte its peer has not taken.
        self._written = 0
        self._writes: deque[tuple[int, int]] = deque()  # (written after, ns), WRITE_LOG at most
        # The kernel acknowledges bytes its application has not read: a peer that stopped
        # reading hides behind its receive buffer for seconds. A connection that reports pongs
        # (``pinged``) gets a ping after each cycle's frames; its WebSocket stack answers once
        # it has read them, so an unanswered ping of an earlier cycle shows it at once.
        self.pinged = False
        self._pings: deque[tuple[int, int]] = deque()  # (cycle, sent ns), PING_LOG at most

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

    def offer_many(
        self, frames: list[Frame], data: bytes | None = None, cycle: int | None = None
    ) -> None:
        """Several frames of one cycle: one write (one system call) for a direct client.

        ``data``: the frames already joined in this client's wire format (shared by every
        client that follows the same scans, so it is joined once a cycle), followed by the
        ping of ``cycle`` for a ``pinged`` client."""
        if self.transport is None or self.lagging_since is not None:
            for frame in frames:
                self.offer(frame)
            return
        if data is None:
            self._write(self.transport, *frames)
        elif self._write_data(self.transport, data, len(frames)) and cycle is not None:
            remember(self._pings, PING_LOG, cycle, time.monotonic_ns())

    def pending_bytes(self) -> int:
        """Bytes written to a direct client that its peer has not acknowledged: the transport's
        buffer and, where it can be read, the kernel's send queue."""
        transport = self.transport
        if transport is None:
            return 0
        pending = transport.get_write_buffer_size()
        if self.kernel_queue is not None:
            pending += self.kernel_queue()
        return pending

    def behind_ns(self, now_ns: int) -> int | None:
        """How long ago the oldest byte its peer has not acknowledged was written; None when
        the peer has acknowledged everything."""
        pending = self.pending_bytes()
        writes = self._writes
        if pending == 0:
            writes.clear()
            return None
        acknowledged = self._written - pending
        while writes and writes[0][0] <= acknowledged:
            writes.popleft()
        # Bytes the library wrote itself (a ping) are pending without a record: age 0.
        return now_ns - writes[0][1] if writes else 0

    def pong(self, payload: bytes) -> None:
        """A pong from the peer: the cycle pings up to the one it answers have been read."""
        cycle = cycle_of_pong(payload)
        pings = self._pings
        if cycle is not None:
            while pings and pings[0][0] <= cycle:
                pings.popleft()

    def standing(self, now_ns: int) -> Standing:
        """Current, backlogged or lagging; a direct client whose peer has left bytes written
        more than ``behind_s`` ago unacknowledged or unread turns lagging here."""
        if self.lagging_since is not None or self.closed:
            return Standing.LAGGING
        if self.transport is None:
            return Standing.BACKLOGGED if self._queue else Standing.CURRENT
        # Bytes of an earlier cycle not yet acknowledged (TCP) or read (its ping unanswered)
        # show a peer that is not keeping up, so it is not written in among the readers; bytes
        # older than behind_s show that it has stopped, so it is not written at all.
        behind = self.behind_ns(now_ns)
        if self._pings:
            behind = max(behind or 0, now_ns - self._pings[0][1])
        if behind is None:
            return Standing.CURRENT
        if behind > self._limits.behind_s * 1e9:
            self.lagging_since = time.monotonic()
            return Standing.LAGGING
        return Standing.BACKLOGGED

    def _write(self, transport: Transport, *frames: Frame) -> None:
        self._write_data(transport, b"".join(f.framed(self.wire) for f in frames), len(frames))

    def _write_data(self, transport: Transport, data: bytes, frames: int) -> bool:
        if self.closed or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self._limits.buffer_bytes:
            self.stats.dropped_frames += frames
            self.lagging_since = time.monotonic()
            return False
        try:
            transport.write(data)
            self._written += len(data)
            remember(self._writes, WRITE_LOG, self._written, time.monotonic_ns())
        except (RuntimeError, OSError):
            # The connection is being torn down under us (e.g. the WebSocket library half-closed
            # it after a missed ping: write() after write_eof() raises). Stop writing to it; the
            # connection's handler disconnects it from the hub.
            self.closed = True
            return False
        self.stats.sent_frames += frames
        return True

    def catch_up(self) -> bool:
        """For a direct client that lagged: once its buffer has drained, send fresh snapshots."""
        transport = self.transport
        if transport is None or self.lagging_since is None or self.closed:
            return False
        if self._pings:
            return False  # it has not read everything it was given
        if self.kernel_queue is not None:
            # Everything it was given has been acknowledged: it is reading again.
            if self.pending_bytes() > 0:
                return False
        elif transport.get_write_buffer_size() > self._limits.buffer_bytes // 4:
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
        self._departed = ClientStats()  # totals of the clients that have gone
        self.cycle = 0  # cycles published (the number in each cycle's ping)
        self.disconnected_lagging = 0

    def connect(self, wire: WireFormat) -> ClientSession:
        client = ClientSession(self, wire, self.limits)
        self.clients.add(client)
        return client

    def disconnect(self, client: ClientSession) -> None:
        if client in self.clients:
            self._departed.add(client.stats)
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
        self.cycle += 1
        cycle = self.cycle
        ping = cycle_ping(cycle)
        ping_every = max(1, -(-len(self.clients) // self.limits.ping_budget))
        # Clients that follow the same scans get the same frames, joined once per wire format
        # (and once with the cycle's ping, which is the same for every client).
        batches: dict[tuple[frozenset[str], WireFormat, bool], tuple[list[Frame], bytes]] = {}

        def pinged_now(client: ClientSession) -> bool:
            return client.pinged and (cycle + client.id) % ping_every == 0

        def batch_for(client: ClientSession) -> tuple[list[Frame], bytes]:
            key = (frozenset(client.scans), client.wire, pinged_now(client))
            found = batches.get(key)
            if found is None:
                frames = []
                for i, delta in enumerate(changed):
                    if delta.scan in client.scans:
                        frame = encoded[i]
                        if frame is None:
                            frame = encoded[i] = delta_frame(delta, sent_ns)
                        frames.append(frame)
                data = b"".join(f.framed(client.wire) for f in frames)
                found = batches[key] = (frames, data + ping if key[2] else data)
            return found

        backlogged: list[ClientSession] = []
        lagging: list[ClientSession] = []
        now_ns = time.monotonic_ns()
        for client in self.clients:
            if not client.scans:
                continue
            standing = client.standing(now_ns)
            if standing is Standing.LAGGING:
                lagging.append(client)  # counted after the writes
            elif standing is Standing.BACKLOGGED:
                backlogged.append(client)
            else:
                frames, data = batch_for(client)
                if frames:
                    client.offer_many(frames, data, cycle if pinged_now(client) else None)
        readers_done_ns = time.time_ns()
        # A write to a client whose socket is full only appends to its buffer, but it must not
        # stand in front of the clients that are reading.
        for client in backlogged:
            frames, data = batch_for(client)
            if frames:
                client.offer_many(frames, data, cycle if pinged_now(client) else None)
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

    def summary(self) -> FanoutSummary:
        totals = ClientStats()
        totals.add(self._departed)
        for client in self.clients:
            totals.add(client.stats)
        return FanoutSummary(
            clients=len(self.clients),
            lagging=sum(c.lagging_since is not None for c in self.clients),
            sent_frames=totals.sent_frames,
            dropped_frames=totals.dropped_frames,
            resnapshots=totals.resnapshots,
            disconnected_lagging=self.disconnected_lagging,
        )

    def disconnect_laggards(self) -> list[ClientSession]:
        """Forget (and count) the clients behind past the lag timeout; the caller closes them."""
        gone = self.lagging_too_long()
        for client in gone:
            self.disconnect(client)
        self.disconnected_lagging += len(gone)
        return gone

    def lagging_too_long(self, now: float | None = None) -> list[ClientSession]:
        moment = time.monotonic() if now is None else now
        timeout = self.limits.lag_timeout_s
        return [
            c
            for c in self.clients
            if c.lagging_since is not None and moment - c.lagging_since > timeout
        ]
