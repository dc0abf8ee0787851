"""A local imitation of Massive's stocks WebSocket, for trying the live path without a key.

It speaks the session as docs/live.md describes it: ``connected`` on open, ``auth`` answered by
``auth_success`` or ``auth_failed`` (then closed), ``subscribe`` acknowledged one topic per
frame, and data frames (JSON arrays of events) filtered by what each connection subscribed to.
Faults are chosen per server: a refused key; dropping the TCP connection without a close frame
after N data frames (the client sees 1006); closing it after N data frames with a status first
(``force_disconnect`` or ``slow_consumer``); stalling a connection after N data frames (it stays
open and answers pings, but no data comes); a malformed frame after every Nth data frame (text
that is not JSON, messages with missing or wrongly typed fields, unknown events and symbols, an
inconsistent bar); and evicting an older connection with ``max_connections`` when another one
logs in with the same key, as the real server does.

Serves on 127.0.0.1 only. Frames come from ``publish`` (the simulator or replay files feed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

_events = msgspec.json.Decoder(list[dict[str, Any]])
# websockets logs every frame at DEBUG, a client's auth message (its key) included.
_socket_log = logging.getLogger("tapescan.feeds.massive.fake_socket")
_socket_log.setLevel(logging.INFO)
_encode = msgspec.json.Encoder().encode


def status(name: str, message: str) -> str:
    return json.dumps([{"ev": "status", "status": name, "message": message}])


@dataclass(slots=True)
class Faults:
    refuse_key: bool = False  # every auth fails, as with a plan without WebSocket access
    drop_after_frames: int | None = None  # per connection: abort the TCP connection after N
    drops_left: int = 1  # how many connections get dropped that way
    stall_after_frames: int | None = None  # per connection: stop sending data after N frames
    stalls_left: int = 1  # how many connections stall that way
    malformed_every: int = 0  # a malformed frame after every Nth data frame (0: never)
    kick_after_frames: int | None = None  # per connection: a status, then close 1008, after N
    kick_status: str = "force_disconnect"  # or "slow_consumer"
    kicks_left: int = 1


@dataclass(slots=True)
class FakeStats:
    connections: int = 0
    authenticated: int = 0
    # the params of the latest subscribes (a client that reconnects all day adds one each time)
    subscriptions: deque[str] = field(default_factory=lambda: deque(maxlen=1_000))
    frames_sent: int = 0
    malformed_sent: int = 0
    dropped: int = 0
    stalled: int = 0
    kicked: int = 0
    evicted: int = 0


@dataclass(eq=False, slots=True)
class _Client:
    socket: ServerConnection
    topics: set[str] = field(default_factory=set)
    authenticated: bool = False
    frames: int = 0
    stalled: bool = False


class FakeMassive:
    def __init__(self, api_key: str, faults: Faults | None = None) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.stats = FakeStats()
        self._clients: list[_Client] = []
        self._server: Server | None = None
        self.port = 0
        self.subscribed = asyncio.Event()  # set at each subscribe (a benchmark's go signal)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stocks"

    async def start(self, port: int = 0) -> int:
        self._server = await serve(
            self._session, "127.0.0.1", port, max_size=2**20, logger=_socket_log
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def publish(self, frame: bytes) -> int:
        """Send ``frame``'s events to every connection subscribed to them; connections reached."""
        events = _events.decode(frame)
        reached = 0
        for client in list(self._clients):
            wanted = [e for e in events if _subscribed(client.topics, e)]
            if not client.authenticated or not wanted or client.stalled:
                continue
            faults = self.faults
            if _due(faults.drop_after_frames, client.frames) and faults.drops_left > 0:
                faults.drops_left -= 1
                self.stats.dropped += 1
                client.socket.transport.abort()  # no close frame: the client sees 1006
                continue
            if _due(faults.kick_after_frames, client.frames) and faults.kicks_left > 0:
                faults.kicks_left -= 1
                self.stats.kicked += 1
                with contextlib.suppress(ConnectionClosed):
                    await client.socket.send(status(faults.kick_status, "closing the connection"))
                    await client.socket.close(1008, faults.kick_status)
                continue
            if _due(faults.stall_after_frames, client.frames) and faults.stalls_left > 0:
                faults.stalls_left -= 1
                self.stats.stalled += 1
                client.stalled = True  # open, pings answered, no data
                continue
            with contextlib.suppress(ConnectionClosed):
                await client.socket.send(_encode(wanted).decode())
                client.frames += 1
                self.stats.frames_sent += 1
                reached += 1
                if faults.malformed_every > 0 and client.frames % faults.malformed_every == 0:
                    kind = client.frames // faults.malformed_every % len(MALFORMED)
                    await client.socket.send(MALFORMED[kind](wanted[0]))
                    self.stats.malformed_sent += 1
        return reached

    def drop_all(self) -> None:
        """Cut every connection without a close frame (the clients see 1006)."""
        for client in list(self._clients):
            self.stats.dropped += 1
            client.socket.transport.abort()

    async def publish_raw(self, frame: str) -> int:
        """Send ``frame`` as it is to every subscribed connection, unfiltered and unfaulted
        (``tapescan bench ingest --feed massive``: the fake's own cost kept out of the way)."""
        reached = 0
        for client in list(self._clients):
            if client.authenticated and client.topics:
                with contextlib.suppress(ConnectionClosed):
                    await client.socket.send(frame)
                    client.frames += 1
                    reached += 1
        self.stats.frames_sent += reached
        return reached

    def subscribers(self) -> int:
        return sum(1 for c in self._clients if c.authenticated and c.topics)

    async def _session(self, socket: ServerConnection) -> None:
        client = _Client(socket)
        self.stats.connections += 1
        self._clients.append(client)
        try:
            await socket.send(status("connected", "Connected Successfully"))
            async for text in socket:
                if not await self._action(client, text):
                    break
        except ConnectionClosed:
            pass
        finally:
            self._clients.remove(client)

    async def _action(self, client: _Client, text: str | bytes) -> bool:
        """One client message; False ends the session."""
        try:
            message = json.loads(text)
            action, params = str(message["action"]), str(message.get("params", ""))
        except (ValueError, KeyError, TypeError):
            await client.socket.send(status("error", "invalid message"))
            return True
        if action == "auth":
            if self.faults.refuse_key or params != self.api_key:
                await client.socket.send(status("auth_failed", "authentication failed"))
                await client.socket.close(1008, "authentication failed")
                return False
            await self._evict_others(client)
            client.authenticated = True
            self.stats.authenticated += 1
            await client.socket.send(status("auth_success", "authenticated"))
            return True
        if action in ("subscribe", "unsubscribe"):
            if not client.authenticated:
                await client.socket.send(status("auth_required", "authenticate first"))
                return True
            chosen = [t.strip() for t in params.split(",") if t.strip()]
            if action == "subscribe":
                self.stats.subscriptions.append(params)
                client.topics.update(chosen)
                self.subscribed.set()
            else:
                client.topics.difference_update(chosen)
            for topic in chosen:  # one acknowledgement frame per topic, as the real server
                await client.socket.send(status("success", f"{action}d to: {topic}"))
            return True
        await client.socket.send(status("error", f"unknown action {action}"))
        return True

    async def _evict_others(self, newcomer: _Client) -> None:
        """One connection per key: the older one is told and closed (1008)."""
        for other in [c for c in self._clients if c is not newcomer and c.authenticated]:
            self.stats.evicted += 1
            with contextlib.suppress(ConnectionClosed):
                await other.socket.send(
                    status("max_connections", "Maximum number of websocket connections exceeded.")
                )
                await other.socket.close(1008, "max_connections")


def _due(after_frames: int | None, frames: int) -> bool:
    return after_frames is not None and frames >= after_frames


def _not_json(_: dict[str, Any]) -> str:
    return '[{"ev":"AM","sym":'


def _not_a_list(event: dict[str, Any]) -> str:
    return json.dumps({"ev": event.get("ev"), "sym": event.get("sym")})


def _wrong_types(event: dict[str, Any]) -> str:
    return json.dumps([{**event, "v": "lots", "s": "soon"}, {**event, "o": None, "c": [1]}])


def _missing_fields(event: dict[str, Any]) -> str:
    return json.dumps([{"ev": event.get("ev"), "sym": event.get("sym")}, {"ev": "AM"}])


def _unknown(event: dict[str, Any]) -> str:
    return json.dumps([{"ev": "XQ", "sym": event.get("sym"), "p": 1}, {**event, "sym": "ZZZZZQ"}])


def _inconsistent(event: dict[str, Any]) -> str:
    """A bar whose high is below its low: parsed, then refused by the state."""
    high, low = event.get("h", 1.0), event.get("l", 1.0)
    return json.dumps([{**event, "h": min(high, low) / 2, "l": max(high, low) * 2}])


# what a malformed frame holds, in turn; none of it may reach the state
MALFORMED = (_not_json, _not_a_list, _wrong_types, _missing_fields, _unknown, _inconsistent)


def _subscribed(topics: Iterable[str], event: dict[str, Any]) -> bool:
    kind = str(event.get("ev", ""))
    symbol = str(event.get("T" if kind == "LULD" else "sym", ""))
    wanted = {f"{kind}.*", f"{kind}.{symbol}"}
    return any(t in wanted for t in topics)
