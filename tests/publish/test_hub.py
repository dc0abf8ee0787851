"""Fan-out: shared frames, bounded queues, a slow client coalesced to a fresh snapshot."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import pytest

import tapescan.publish.hub as hub_module
from tapescan.ops.raw_ws_client import take_frames
from tapescan.publish.frames import Frame, WireFormat, delta_frame
from tapescan.publish.hub import ClientSession, FanoutLimits, Hub, Standing
from tapescan.scan.delta import Delta, Snapshot


class Scans:
    def __init__(self) -> None:
        self.seq = 0

    def snapshot(self, scan: str) -> Snapshot | None:
        if scan != "s":
            return None
        return Snapshot("s", self.seq, 0, ("symbol", "v"), (("A", float(self.seq)),))

    def delta(self) -> Delta:
        self.seq += 1
        return Delta("s", self.seq, self.seq - 1, 0, (("A", float(self.seq)),), (), None)


async def drain(client: object, count: int) -> list[str]:
    out = []
    for _ in range(count):
        frame = await asyncio.wait_for(client.next_frame(), 1)  # type: ignore[attr-defined]
        out.append(f"{frame.type}:{frame.decoded().get('seq')}")
    return out


async def test_each_frame_is_encoded_once_and_shared_by_every_client() -> None:
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(queue_frames=8))
    clients = [hub.connect(WireFormat.JSON) for _ in range(3)]
    for client in clients:
        hub.subscribe(client, ["s"])
    hub.publish([scans.delta()])
    frames = [[await c.next_frame() for _ in range(2)] for c in clients]
    assert frames[0][1] is frames[1][1] is frames[2][1]
    assert frames[0][1].encoded(WireFormat.JSON) is frames[1][1].encoded(WireFormat.JSON)


async def test_a_client_that_falls_behind_is_coalesced_to_one_fresh_snapshot_and_others_are_untouched() -> (
    None
):
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(queue_frames=4, lag_timeout_s=30))
    slow, fast = hub.connect(WireFormat.JSON), hub.connect(WireFormat.JSON)
    hub.subscribe(slow, ["s"])
    hub.subscribe(fast, ["s"])
    fast_seen = await drain(fast, 1)
    for _ in range(10):
        hub.publish([scans.delta()])
        fast_seen += await drain(fast, 1)
    assert fast_seen == ["snapshot:0"] + [f"delta:{i}" for i in range(1, 11)]
    assert slow.lagging_since is not None
    assert slow.queued == 0  # queued deltas were dropped: memory stays bounded
    assert await drain(slow, 1) == ["snapshot:10"]  # one fresh snapshot once it catches up
    hub.publish([scans.delta()])
    assert await drain(slow, 1) == ["delta:11"]  # and deltas again from there
    assert slow.stats.resnapshots == 1


async def test_a_client_behind_past_the_timeout_is_reported_for_disconnection() -> None:
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(queue_frames=2, lag_timeout_s=5))
    client = hub.connect(WireFormat.JSON)
    hub.subscribe(client, ["s"])
    for _ in range(5):
        hub.publish([scans.delta()])
    assert client.lagging_since is not None
    assert hub.lagging_too_long(client.lagging_since + 4) == []
    assert hub.lagging_too_long(client.lagging_since + 6) == [client]
    dropped = client.stats.dropped_frames
    client.lagging_since -= 6  # now past the timeout
    assert hub.disconnect_laggards() == [client]
    assert hub.clients == set()
    summary = hub.summary()
    assert summary.disconnected_lagging == 1
    assert summary.dropped_frames == dropped > 0  # a departed client's counts are kept


async def test_unknown_scans_get_an_error_frame() -> None:
    hub = Hub(Scans().snapshot)
    client = hub.connect(WireFormat.JSON)
    hub.subscribe(client, ["nope"])
    frame = await client.next_frame()
    assert frame.decoded()["type"] == "error"
    assert frame.decoded()["code"] == "unknown_scan"
    assert client.scans == set()


class FakeTransport:
    """Records writes; its buffer size is whatever the test says."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


def messages_in(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of a run of unmasked server frames."""
    buffer = bytearray(data)
    messages = list(take_frames(buffer))
    assert not buffer, "a write holds whole frames"
    return messages


def frames_in(data: bytes) -> list[dict[str, object]]:
    """Decode a run of unmasked server text frames."""
    return [json.loads(payload) for _, payload in messages_in(data)]


async def test_a_direct_client_gets_all_frames_of_a_cycle_in_one_write_and_lags_past_its_buffer() -> (
    None
):
    class Many:
        def __init__(self) -> None:
            self.seq = {"a": 0, "b": 0}

        def snapshot(self, scan: str) -> Snapshot | None:
            return Snapshot(scan, self.seq[scan], 0, ("symbol",), ()) if scan in self.seq else None

        def delta(self, scan: str) -> Delta:
            self.seq[scan] += 1
            return Delta(scan, self.seq[scan], self.seq[scan] - 1, 0, (("A",),), (), None)

    scans = Many()
    hub = Hub(scans.snapshot, FanoutLimits(buffer_bytes=1_000))
    client = hub.connect(WireFormat.JSON)
    transport = FakeTransport()
    client.transport = transport
    hub.subscribe(client, ["a", "b"])
    assert [m["type"] for w in transport.writes for m in frames_in(w)] == ["snapshot", "snapshot"]
    transport.writes.clear()
    hub.publish([scans.delta("a"), scans.delta("b")])
    assert len(transport.writes) == 1
    assert [(m["scan"], m["seq"]) for m in frames_in(transport.writes[0])] == [("a", 1), ("b", 1)]
    transport.buffered = 5_000  # the peer stopped reading
    hub.publish([scans.delta("a")])
    assert client.lagging_since is not None
    assert len(transport.writes) == 1
    assert not client.catch_up()  # still full
    transport.buffered = 0
    assert client.catch_up()
    fresh = [m for w in transport.writes[1:] for m in frames_in(w)]
    assert [(m["type"], m["scan"], m["seq"]) for m in fresh] == [
        ("snapshot", "a", 2),
        ("snapshot", "b", 1),
    ]


class HalfClosedTransport(FakeTransport):
    """What asyncio does once the library has half-closed the connection (write_eof)."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("Cannot call write() after write_eof()")


async def test_a_connection_that_refuses_writes_does_not_stop_publishing_to_the_others() -> None:
    scans = Scans()
    hub = Hub(scans.snapshot)
    gone, alive = hub.connect(WireFormat.JSON), hub.connect(WireFormat.JSON)
    gone.transport, alive.transport = HalfClosedTransport(), (transport := FakeTransport())
    hub.subscribe(gone, ["s"])
    hub.subscribe(alive, ["s"])
    for _ in range(3):
        hub.publish([scans.delta()])
    assert gone.closed
    assert [m["type"] for w in transport.writes for m in frames_in(w)] == ["snapshot"] + [
        "delta"
    ] * 3


async def test_clients_that_keep_up_are_written_to_before_backlogged_ones() -> None:
    order: list[str] = []

    class Named(FakeTransport):
        def __init__(self, name: str, buffered: int) -> None:
            super().__init__()
            self.name, self.buffered = name, buffered

        def write(self, data: bytes) -> None:
            order.append(self.name)

    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(buffer_bytes=10_000))
    for name, buffered in [("slow1", 500), ("fast1", 0), ("slow2", 9_000), ("fast2", 0)]:
        client = hub.connect(WireFormat.JSON)
        client.transport = Named(name, buffered)
        hub.subscribe(client, ["s"])
    order.clear()
    hub.publish([scans.delta()])
    assert sorted(order[:2]) == ["fast1", "fast2"]
    assert sorted(order[2:]) == ["slow1", "slow2"]


async def test_frames_only_backlogged_clients_follow_are_encoded_after_the_readers_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cycle's frames are encoded on demand: the scans a reading client follows first, then
    what backlogged clients follow; a scan only a lagging client follows is never encoded."""
    events: list[str] = []
    real_delta_frame = delta_frame

    def recording_delta_frame(delta: Delta, sent_ns: int | None = None) -> Frame:
        events.append(f"encode:{delta.scan}")
        return real_delta_frame(delta, sent_ns)

    monkeypatch.setattr(hub_module, "delta_frame", recording_delta_frame)

    class Named(FakeTransport):
        def __init__(self, name: str, buffered: int) -> None:
            super().__init__()
            self.name, self.buffered = name, buffered

        def write(self, data: bytes) -> None:
            events.append(f"write:{self.name}")

    seqs = {"a": 0, "b": 0, "c": 0}

    def snapshot(scan: str) -> Snapshot | None:
        return Snapshot(scan, seqs[scan], 0, ("symbol",), ()) if scan in seqs else None

    def delta(scan: str) -> Delta:
        seqs[scan] += 1
        return Delta(scan, seqs[scan], seqs[scan] - 1, 0, (("A",),), (), None)

    hub = Hub(snapshot, FanoutLimits(buffer_bytes=10_000))
    follows = {"reader": ["a"], "backlogged": ["a", "b"], "lagging": ["a", "b", "c"]}
    buffered = {"reader": 0, "backlogged": 500, "lagging": 0}
    clients = {}
    for name, scans in follows.items():
        client = hub.connect(WireFormat.JSON)
        client.transport = Named(name, buffered[name])
        hub.subscribe(client, scans)
        clients[name] = client
    clients["lagging"].lagging_since = 0.0
    events.clear()
    hub.publish([delta("c"), delta("b"), delta("a")])
    assert events == ["encode:a", "write:reader", "encode:b", "write:backlogged"]
    assert clients["lagging"].stats.dropped_frames == 3


async def test_a_client_whose_kernel_queue_holds_earlier_bytes_is_written_after_the_readers() -> (
    None
):
    """A peer that stopped reading looks healthy while the kernel still takes its bytes; the
    bytes of an earlier cycle still unacknowledged give it away."""
    order: list[str] = []
    scans = Scans()
    hub = Hub(scans.snapshot)
    unacknowledged = {"stalled": 40_000, "reader1": 0, "reader2": 0}
    for name in ("stalled", "reader1", "reader2"):
        client = hub.connect(WireFormat.JSON)
        client.transport = Recorded(name, order)
        client.kernel_queue = lambda name=name: unacknowledged[name]
        hub.subscribe(client, ["s"])
    order.clear()
    hub.publish([scans.delta()])
    assert sorted(order[:2]) == ["reader1", "reader2"]
    assert order[2] == "stalled"


async def test_stamped_cycles_record_when_readers_and_everyone_were_written() -> None:
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(buffer_bytes=10_000))
    for buffered in (0, 500):
        client = hub.connect(WireFormat.JSON)
        transport = FakeTransport()
        transport.buffered = buffered
        client.transport = transport
        hub.subscribe(client, ["s"])
    hub.publish([scans.delta()])  # not stamped: not timed
    assert not hub.cycle_timings
    sent_ns = time.time_ns()
    hub.publish([scans.delta()], sent_ns)
    (timing,) = hub.cycle_timings
    assert timing.sent_ns == sent_ns
    assert 0 <= timing.readers_ns <= timing.all_ns < 10**9


async def test_clients_following_the_same_scans_share_one_joined_write_per_wire_format() -> None:
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(buffer_bytes=10_000))
    transports = []
    for wire in (WireFormat.JSON, WireFormat.JSON, WireFormat.MSGPACK):
        client = hub.connect(wire)
        transport = FakeTransport()
        client.transport = transport
        hub.subscribe(client, ["s"])
        transports.append(transport)
    lagging = hub.connect(WireFormat.JSON)
    lagging.transport = FakeTransport()
    hub.subscribe(lagging, ["s"])
    lagging.lagging_since = time.monotonic()
    for transport in transports:
        transport.writes.clear()
    hub.publish([scans.delta()])
    first, second, packed = (t.writes for t in transports)
    assert first[0] is second[0]  # joined once, written to both
    assert packed[0] != first[0]
    assert frames_in(first[0])[0]["seq"] == 1
    assert lagging.stats.dropped_frames == 1


class FakeClock:
    """The hub's clock, moved by the test."""

    def __init__(self) -> None:
        self.now_s = 1_000.0

    def monotonic(self) -> float:
        return self.now_s

    def monotonic_ns(self) -> int:
        return round(self.now_s * 1e9)

    def time_ns(self) -> int:
        return round(self.now_s * 1e9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The hub's clock, under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(hub_module, "time", fake)
    return fake


class Peer(FakeTransport):
    """A connection whose peer acknowledges what the test says: the kernel's send queue holds
    everything written and not yet acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.acknowledged = 0

    @property
    def written(self) -> int:
        return sum(map(len, self.writes))

    def unacknowledged(self) -> int:
        return self.written - self.acknowledged

    def read_all(self) -> None:
        self.acknowledged = self.written


class Recorded(Peer):
    """A peer that notes its name in ``order`` at each write."""

    def __init__(self, name: str, order: list[str]) -> None:
        super().__init__()
        self.name, self.order = name, order

    def write(self, data: bytes) -> None:
        self.order.append(self.name)
        super().write(data)


def direct_client(hub: Hub, scan: str = "s") -> tuple[ClientSession, Peer]:
    """A client on a direct transport, subscribed to ``scan``, whose kernel is ``Peer``."""
    client = hub.connect(WireFormat.JSON)
    peer = Peer()
    client.transport = peer
    client.kernel_queue = peer.unacknowledged
    hub.subscribe(client, [scan])
    return client, peer


async def test_a_peer_that_leaves_bytes_unacknowledged_past_behind_s_lags_until_it_reads_all(
    clock: FakeClock,
) -> None:
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(behind_s=3.0))
    client, peer = direct_client(hub)
    peer.read_all()
    clock.now_s += 1
    hub.publish([scans.delta()])  # seq 1: the last bytes the peer will take for a while
    assert client.standing(clock.monotonic_ns()) is Standing.BACKLOGGED
    clock.now_s += 1
    hub.publish([scans.delta()])  # seq 2: written after the readers, behind by 1 s
    assert client.lagging_since is None
    clock.now_s += 2.5
    hub.publish([scans.delta()])  # seq 3: seq 1's bytes are 3.5 s old: lagging, not written
    assert client.lagging_since == clock.now_s
    assert [m["seq"] for w in peer.writes for m in frames_in(w)] == [0, 1, 2]
    assert client.stats.dropped_frames == 1
    assert not client.catch_up()  # it has not read anything yet
    peer.acknowledged += 10  # a little is not enough
    assert not client.catch_up()
    peer.read_all()
    assert client.catch_up()  # everything taken: a fresh snapshot, then deltas again
    hub.publish([scans.delta()])
    received = [(m["type"], m["seq"]) for w in peer.writes[3:] for m in frames_in(w)]
    assert received == [("snapshot", 3), ("delta", 4)]
    assert client.lagging_since is None


async def test_a_slow_peer_that_keeps_taking_its_bytes_is_backlogged_but_never_lagging(
    clock: FakeClock,
) -> None:
    """Its queue is never empty at a cycle, but nothing waits longer than behind_s."""
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(behind_s=3.0))
    client, peer = direct_client(hub)
    for _ in range(20):
        clock.now_s += 1
        hub.publish([scans.delta()])
        # It takes everything but the last two cycles' bytes.
        peer.acknowledged = sum(map(len, peer.writes[:-2]))
        assert client.standing(clock.monotonic_ns()) is Standing.BACKLOGGED
    assert client.lagging_since is None
    assert [m["seq"] for w in peer.writes for m in frames_in(w)] == list(range(21))


async def test_a_pinged_client_that_stops_answering_the_cycle_pings_is_served_last_then_lags(
    clock: FakeClock,
) -> None:
    """Its kernel acknowledges everything (the peer's receive buffer takes it), but the ping at
    the end of a cycle's write stays unanswered: written after the readers, lagging after
    behind_s, and fresh snapshots once it has answered again."""
    order: list[str] = []
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(behind_s=3.0))
    peers = {}
    clients = {}
    for name in ("stalled", "reader1", "reader2"):
        client = hub.connect(WireFormat.JSON)
        peers[name] = Recorded(name, order)
        client.transport, client.kernel_queue = peers[name], lambda: 0  # all acknowledged
        client.pinged = True
        hub.subscribe(client, ["s"])
        clients[name] = client

    def cycle() -> None:
        order.clear()
        clock.now_s += 1
        hub.publish([scans.delta()])
        for name in ("reader1", "reader2"):  # the readers answer the cycle's ping
            opcode, payload = messages_in(peers[name].writes[-1])[-1]
            assert opcode == 0x9
            clients[name].pong(payload)

    cycle()
    (delta, ping) = messages_in(peers["stalled"].writes[-1])
    assert json.loads(delta[1])["seq"] == 1
    assert ping[0] == 0x9
    clients["stalled"].pong(ping[1])  # it read cycle 1, then stopped
    cycle()  # cycle 2: everyone current
    assert sorted(order) == ["reader1", "reader2", "stalled"]
    cycle()  # cycle 2's ping unanswered: written last
    assert sorted(order[:2]) == ["reader1", "reader2"]
    assert order[2] == "stalled"
    cycle()
    cycle()  # cycle 2's ping is 3 s old: not past behind_s yet
    assert order[2] == "stalled"
    cycle()  # 4 s: lagging, not written
    assert sorted(order) == ["reader1", "reader2"]
    assert clients["stalled"].lagging_since is not None
    assert not clients["stalled"].catch_up()  # its kernel took everything, but it read nothing
    clients["stalled"].pong(messages_in(peers["stalled"].writes[-2])[-1][1])  # not the last
    assert not clients["stalled"].catch_up()
    clients["stalled"].pong(messages_in(peers["stalled"].writes[-1])[-1][1])  # read it all
    assert clients["stalled"].catch_up()
    (snapshot,) = messages_in(peers["stalled"].writes[-1])
    assert json.loads(snapshot[1])["type"] == "snapshot"
    cycle()
    assert sorted(order) == ["reader1", "reader2", "stalled"]  # current again


def test_pongs_of_other_pings_are_ignored() -> None:
    hub = Hub(Scans().snapshot)
    client = hub.connect(WireFormat.JSON)
    client.pinged = True
    client.pong(b"\x01\x02\x03\x04")  # the keepalive's ping payload
    client.pong(b"tc" + (5).to_bytes(8, "big"))  # answers cycles up to 5 (none outstanding)
    assert client.standing(time.monotonic_ns()) is Standing.CURRENT


def test_a_full_log_stretches_its_last_entry_and_keeps_the_oldest_times() -> None:
    log: deque[tuple[int, int]] = deque()
    for upto in range(1, 6):
        hub_module.remember(log, 3, upto * 10, upto)
    assert list(log) == [(10, 1), (20, 2), (50, 3)]


async def test_past_the_ping_budget_each_client_is_pinged_every_few_cycles_in_turn() -> None:
    """Three clients, one ping a cycle: each is pinged every third cycle, one per cycle."""
    scans = Scans()
    hub = Hub(scans.snapshot, FanoutLimits(ping_budget=1))
    peers = []
    for _ in range(3):
        client, peer = direct_client(hub)
        client.kernel_queue, client.pinged = lambda: 0, True
        peer.writes.clear()
        peers.append((client, peer))
    for _ in range(6):
        hub.publish([scans.delta()])
        for client, peer in peers:  # every client reads and answers at once
            opcode, payload = messages_in(peer.writes[-1])[-1]
            if opcode == 0x9:
                client.pong(payload)
    pinged = [[messages_in(w)[-1][0] == 0x9 for w in peer.writes] for _, peer in peers]
    assert all(len(p) == 6 for p in pinged)  # everyone got every cycle's frames
    assert [sum(p[i] for p in pinged) for i in range(6)] == [1] * 6
    for p in pinged:
        first = p.index(True)
        assert [i for i, yes in enumerate(p) if yes] == [first, first + 3]
    assert all(c.standing(time.monotonic_ns()) is Standing.CURRENT for c, _ in peers)
