"""A minimal WebSocket reader for load tests: many cheap connections in one process.

It does the opening handshake, sends masked client frames (zero mask key, which RFC 6455 allows),
answers pings (the server's cycle pings tell it who has read) and hands every text/binary payload
to a sink with its receipt time. It is enough to read a tapescan server's frames at thousands per
second without a full client library per connection.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Iterator

Sink = Callable[[int, bytes], None]


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame with a zero mask key (the payload stays as it is)."""
    length = len(payload)
    first = bytes((0x80 | opcode,))
    if length < 126:
        header = first + bytes((0x80 | length,))
    elif length < 1 << 16:
        header = first + bytes((0x80 | 126,)) + length.to_bytes(2, "big")
    else:
        header = first + bytes((0x80 | 127,)) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def take_frames(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked server frame at the front of ``buffer``,
    removed from it as it is taken; an incomplete frame stays for the next read."""
    while len(buffer) >= 2:
        opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return
            length, offset = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                return
            length, offset = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < offset + length:
            return
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        yield opcode, payload


class RawReader(asyncio.Protocol):
    def __init__(self, host: str, path: str, first_message: bytes, sink: Sink) -> None:
        self._host, self._path = host, path
        self._first_message = first_message
        self._sink = sink
        self._buffer = bytearray()
        self._open = False
        self._transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        received = time.time_ns()
        self._buffer += data
        if not self._open and not self._handshake():
            return
        self._frames(received)

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
        del self._buffer[: end + 4]
        if b" 101 " not in status:
            self.ready.set_exception(ConnectionError(status.decode(errors="replace")))
            return False
        self._open = True
        assert self._transport is not None
        self._transport.write(client_frame(self._first_message))
        self.ready.set_result(None)
        return True

    def _frames(self, received: int) -> None:
        for opcode, payload in take_frames(self._buffer):
            if opcode in (0x1, 0x2):
                self._sink(received, payload)
            elif opcode == 0x9:
                # Answered once this round of reads is done: many readers share this process,
                # and a write here would delay the receipt time of the readers after it.
                asyncio.get_running_loop().call_soon(self._pong, payload)
            elif opcode == 0x8 and self._transport is not None:
                self._transport.close()

    def _pong(self, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(client_frame(payload, opcode=0xA))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_readers(
    host: str, port: int, count: int, first_message: bytes, sink: Sink, batch: int = 100
) -> list[RawReader]:
    loop = asyncio.get_running_loop()
    readers: list[RawReader] = []
    for first in range(0, count, batch):
        made = []
        for _ in range(first, min(count, first + batch)):
            _, protocol = await loop.create_connection(
                lambda: RawReader(f"{host}:{port}", "/ws", first_message, sink), host, port
            )
            made.append(protocol)
        await asyncio.gather(*(reader.ready for reader in made))
        readers.extend(made)
    return readers
