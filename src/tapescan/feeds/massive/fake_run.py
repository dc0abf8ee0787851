"""``tapescan fake-massive``: the fake socket and the fake REST API over one simulated market."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from tapescan.feeds.massive.fake_market import FakeMarket
from tapescan.feeds.massive.fake_rest import RestFaults, rest_app
from tapescan.feeds.massive.fake_server import FakeMassive, Faults
from tapescan.market.clock import Clock


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the command decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class FakePorts:
    ws: int
    rest: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws}/stocks"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest}"


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (the fake never serves another address)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    return listener


async def serve_fake(
    market: FakeMarket,
    api_key: str,
    clock: Clock,
    start_ns: int,
    ws_port: int,
    rest_listener: socket.socket,
    faults: Faults,
    rest_faults: RestFaults,
    stop: asyncio.Event,
    on_ready: Callable[[FakePorts], None],
) -> None:
    server = FakeMassive(api_key, faults)
    await server.start(ws_port)
    config = uvicorn.Config(
        rest_app(market, api_key, clock, rest_faults),
        log_level=logging.WARNING,
        access_log=False,
        lifespan="off",
    )
    rest = _QuietServer(config)
    rest_task = asyncio.create_task(rest.serve(sockets=[rest_listener]))
    while not rest.started:
        if rest_task.done():
            rest_task.result()
        await asyncio.sleep(0.01)  # uvicorn has no start event to await
    socket_task = asyncio.create_task(market.serve_socket(server, clock, start_ns))
    on_ready(FakePorts(server.port, int(rest_listener.getsockname()[1])))
    try:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, socket_task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if socket_task.done():
            socket_task.result()  # the market's failure, if any
    finally:
        socket_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await socket_task
        rest.should_exit = True
        await rest_task
        await server.close()
