"""The Massive client against the local fake server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from tapescan.feeds.massive.backfill import Backfiller
from tapescan.feeds.massive.client import MassiveAuthError, MassiveClient, MassiveFatalError
from tapescan.feeds.massive.fake_server import FakeMassive, Faults
from tapescan.feeds.massive.feed import _session_events
from tapescan.feeds.massive.link import Backoff, Link, LinkState, topics
from tapescan.feeds.massive.parse import FrameParser, ParsedFrame
from tapescan.model import AggregateKind, Universe

RESOURCES = Path(__file__).parent / "resources"
UNIVERSE = Universe(["GTE", "MSFT", "SPCE"])
KEY = "fake-key-for-tests"


def recorded_frames() -> list[bytes]:
    recorded = json.loads((RESOURCES / "frames.json").read_text())
    return [json.dumps(item["frame"]).encode() for item in recorded]


async def reaches(client: MassiveClient, state: LinkState) -> None:
    async with asyncio.timeout(10):
        await client.wait_until(lambda: client.state is state)


def client_for(server: FakeMassive, key: str = KEY) -> MassiveClient:
    link = Link(key, topics(), backoff=Backoff(base_s=0.05, cap_s=1.0), rng=random.Random(2))
    return MassiveClient(server.url, link, FrameParser(UNIVERSE))


@pytest.fixture
async def server() -> AsyncIterator[FakeMassive]:
    fake = FakeMassive(KEY)
    await fake.start()
    yield fake
    await fake.close()


async def next_batch(client: MassiveClient) -> ParsedFrame:
    async with asyncio.timeout(10):
        async for parsed in client.batches():
            return parsed
    raise AssertionError("no batch")


async def test_connects_authenticates_subscribes_and_receives_bars(server: FakeMassive) -> None:
    client = client_for(server)
    running = asyncio.create_task(client.run())
    try:
        await reaches(client, LinkState.LIVE)
        assert list(server.stats.subscriptions) == ["A.*,AM.*,LULD.*"]
        assert await server.publish(recorded_frames()[0]) == 1
        parsed = await next_batch(client)
        (batch,) = parsed.batches
        assert batch.kind is AggregateKind.SECOND
        assert batch.close.tolist() == [25.39, 0.4486]
    finally:
        await client.stop()
        await running


async def test_a_refused_key_ends_the_client_with_exit_code_2_and_no_retry(
    server: FakeMassive,
) -> None:
    client = client_for(server, key="wrong-key")
    async with asyncio.timeout(5):
        with pytest.raises(MassiveAuthError, match="MASSIVE_API_KEY") as failure:
            await client.run()
    assert failure.value.exit_code == 2
    assert "wrong-key" not in str(failure.value)
    assert server.stats.connections == 1
    assert client.state is LinkState.FAILED


async def test_a_dropped_connection_is_reconnected_and_resubscribed(
    server: FakeMassive,
) -> None:
    server.faults = Faults(drop_after_frames=1)
    client = client_for(server)
    running = asyncio.create_task(client.run())
    try:
        await reaches(client, LinkState.LIVE)
        frame = recorded_frames()[0]
        assert await server.publish(frame) == 1
        await next_batch(client)
        await server.publish(frame)  # the server drops the TCP connection instead
        assert server.stats.dropped == 1
        async with asyncio.timeout(10):  # back after one reconnect
            await client.wait_until(
                lambda: client.link.counters.reconnects == 1 and client.state is LinkState.LIVE
            )
        assert server.stats.authenticated == 2
        assert list(server.stats.subscriptions) == ["A.*,AM.*,LULD.*"] * 2
        assert client.link.counters.reconnects == 1
        assert client.link.counters.drops == {"closed 1006": 1}
        assert await server.publish(frame) == 1
        assert (await next_batch(client)).batches
    finally:
        await client.stop()
        await running


@pytest.mark.parametrize("kick", ["force_disconnect", "slow_consumer"])
async def test_a_server_that_closes_the_session_is_warned_about_and_reconnected(
    server: FakeMassive, kick: str
) -> None:
    server.faults = Faults(kick_after_frames=1, kick_status=kick)
    client = client_for(server)
    running = asyncio.create_task(client.run())
    try:
        await reaches(client, LinkState.LIVE)
        frame = recorded_frames()[0]
        assert await server.publish(frame) == 1
        await next_batch(client)
        await server.publish(frame)  # the server says why, then closes (1008)
        assert server.stats.kicked == 1
        async with asyncio.timeout(10):
            await client.wait_until(
                lambda: client.link.counters.reconnects == 1 and client.state is LinkState.LIVE
            )
        assert client.link.counters.drops == {kick: 1}
        assert any(kick in warning for warning in client.warnings)
        assert list(server.stats.subscriptions) == ["A.*,AM.*,LULD.*"] * 2
        assert await server.publish(frame) == 1
        assert (await next_batch(client)).batches
    finally:
        await client.stop()
        await running


async def test_a_second_process_on_the_key_is_warned_about_and_backed_off(
    server: FakeMassive,
) -> None:
    first, second = client_for(server), client_for(server)
    tasks = [asyncio.create_task(first.run())]
    try:
        await reaches(first, LinkState.LIVE)
        tasks.append(asyncio.create_task(second.run()))
        await reaches(first, LinkState.RECONNECTING)
        await reaches(second, LinkState.LIVE)
        assert second.state is LinkState.LIVE
        assert any("another process" in w for w in first.warnings)
        due = first.link.reconnect_at
        assert due is not None
        assert due - asyncio.get_running_loop().time() >= 0.9  # the cap (1 s here), not 0.05
    finally:
        for client in (first, second):
            await client.stop()
        await asyncio.gather(*tasks)


async def test_frames_over_1_mib_are_read(server: FakeMassive) -> None:
    client = client_for(server)
    running = asyncio.create_task(client.run())
    try:
        await reaches(client, LinkState.LIVE)
        second = json.loads(recorded_frames()[0])[0]
        big = json.dumps([second] * 6_000).encode()  # ~1.5 MB of per-second bars
        assert len(big) > 2**20
        assert await server.publish(big) == 1
        parsed = await next_batch(client)
        assert sum(len(b) for b in parsed.batches) == 6_000
    finally:
        await client.stop()
        await running


async def test_the_key_is_not_logged_even_at_debug(
    server: FakeMassive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(server)
    running = asyncio.create_task(client.run())
    try:
        await reaches(client, LinkState.LIVE)
    finally:
        await client.stop()
        await running
    assert server.stats.authenticated == 1
    assert KEY not in caplog.text


async def test_a_url_that_cannot_work_is_fatal_not_retried() -> None:
    link = Link(KEY, topics())
    client = MassiveClient("http://127.0.0.1:1/stocks", link, FrameParser(UNIVERSE))
    async with asyncio.timeout(5):
        with pytest.raises(MassiveFatalError, match="not a WebSocket URL"):
            await client.run()


class NeverFills:
    """A backfill with nothing to fill."""

    async def next(self) -> None:
        await asyncio.Event().wait()


async def test_a_drop_and_reconnect_while_the_consumer_is_busy_is_still_told(
    server: FakeMassive,
) -> None:
    """The feed learns of a drop from the session's states; one that began and ended while it
    waited (for the store, say) must still be told, or its gap would never be filled."""
    client = client_for(server)
    running = asyncio.create_task(client.run())
    events = _session_events(client, running, cast(Backfiller, NeverFills()))
    try:
        async with asyncio.timeout(10):
            while await anext(events) is not LinkState.LIVE:
                pass
            # the consumer is busy: the socket drops and is live again meanwhile
            sessions = client.link.counters.sessions
            server.drop_all()
            await client.wait_until(lambda: client.link.counters.sessions > sessions)
            await reaches(client, LinkState.LIVE)
            assert await server.publish(recorded_frames()[0]) == 1
            # the frame is read and parsed (by the generator's pending read) before the
            # consumer asks again: nothing to await for it from here
            while client.parser.counters.frames == 0:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.01)
            told = [await anext(events) for _ in range(3)]
        assert told[:2] == [LinkState.RECONNECTING, LinkState.LIVE]
        assert isinstance(told[2], ParsedFrame)
    finally:
        await events.aclose()
        await client.stop()
        await running
