"""A local imitation of Massive's stocks WebSocket, for trying the live path without a key.

It speaks the session as docs/live.md describes it: ``connected`` on open, ``auth`` answered by
``auth_success`` or ``auth_failed`` (then closed), ``subscribe`` acknowledged one topic per
frame, and data frames (JSON arrays of events) filtered by what each connection subscribed to.
Faults are chosen per server: a refused key, dropping the TCP connection without a close frame
after N data frames (the client sees 1006), and evicting an older connection with
``max_connections`` when another one logs in with the same key, as the real server does.

Serves on 127.0.0.1 only. Frames come from ``publish`` (the simulator or replay files feed it).
"""

from __future__ import annotations

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


@dataclass(slots=True)
class FakeStats:
    connections: int = 0
    authenticated: int = 0
    # the params of the latest subscribes (a client that reconnects all day adds one each time)
    subscriptions: deque[str] = field(default_factory=lambda: deque(maxlen=1_000))
    frames_sent: int = 0
    dropped: int = 0
    evicted: int = 0


@dataclass(eq=False, slots=True)
class _Client:
    socket: ServerConnection
    topics: set[str] = field(default_factory=set)
    authenticated: bool = False
    frames: int = 0


class FakeMassive:
    def __init__(self, api_key: str, faults: Faults | None = None) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.stats = FakeStats()
        self._clients: list[_Client] = []
        self._server: Server | None = None
        self.port = 0

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
            if not client.authenticated or not wanted:
                continue
            drop = self.faults.drop_after_frames
            if drop is not None and client.frames >= drop and self.faults.drops_left > 0:
                self.faults.drops_left -= 1
                self.stats.dropped += 1
                client.socket.transport.abort()  # no close frame: the client sees 1006
                continue
            with contextlib.suppress(ConnectionClosed):
                await client.socket.send(_encode(wanted).decode())
                client.frames += 1
                self.stats.frames_sent += 1
                reached += 1
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


def _subscribed(topics: Iterable[str], event: dict[str, Any]) -> bool:
    kind = str(event.get("ev", ""))
    symbol = str(event.get("T" if kind == "LULD" else "sym", ""))
    wanted = {f"{kind}.*", f"{kind}.{symbol}"}
    return any(t in wanted for t in topics)
