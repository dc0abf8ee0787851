"""Clients that subscribe and then never read, in a process of their own (``bench fanout``).

``python -m tapescan.ops.idle_clients HOST:PORT COUNT SCAN...`` opens COUNT WebSocket clients
(the websockets library, reading paused once one frame is queued), subscribes each to the scans,
prints ``ready`` and holds the connections until its standard input closes; then it exits without
a close handshake, which would wait behind the unread frames. In their own process they cost the
measuring process nothing, as idle clients on other machines would.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec
from websockets.asyncio.client import ClientConnection, connect

CONNECT_BATCH = 100


async def open_idle(url: str, count: int, scans: list[str]) -> list[ClientConnection]:
    connections: list[ClientConnection] = []
    subscribe = msgspec.json.encode({"op": "subscribe", "scans": scans})
    for first in range(0, count, CONNECT_BATCH):
        batch = await asyncio.gather(
            *(
                connect(f"ws://{url}/ws", max_queue=1, open_timeout=60)
                for _ in range(first, min(count, first + CONNECT_BATCH))
            )
        )
        for ws in batch:
            await ws.send(subscribe)
        connections.extend(batch)
    return connections


async def _hold(url: str, count: int, scans: list[str]) -> None:
    connections = await open_idle(url, count, scans)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes our input
    for ws in connections:
        ws.transport.abort()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m tapescan.ops.idle_clients HOST:PORT COUNT SCAN...", file=sys.stderr)
        return 2
    asyncio.run(_hold(argv[0], int(argv[1]), argv[2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
