"""uvicorn's WebSocket protocol, with the connection's transport made available to the app.

The fan-out writes each shared, pre-framed message straight to every client's transport: a
server-to-client frame is unmasked, so its bytes are the same for every client. This avoids the
several event-loop hops of an ASGI send per client and frame. The library still writes its own
frames (pings, close); every write is one whole frame, so they never interleave.

Pongs are handed to the app as they are read (``pongs``): the fan-out ends each cycle's write
with a ping and learns from its pong that the client's WebSocket stack has read that far.

The socket's send buffer is capped: left to autotuning, Linux lets it grow to megabytes
(net.ipv4.tcp_wmem), so a peer that stopped reading would absorb minutes of frames in the kernel
before the transport's own buffer (which the fan-out checks against ``ws_buffer_bytes``) showed
it. With the cap, a stalled peer is seen as backlogged within seconds.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from collections.abc import Callable
from typing import Any

from uvicorn.config import UvicornDeprecationWarning

with warnings.catch_warnings():
    # uvicorn plans to point `websockets` at its sans-I/O implementation; until the direct
    # transport access is ported there, this subclass keeps the legacy one (see the note).
    warnings.simplefilter("ignore", UvicornDeprecationWarning)
    from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol
    from websockets.frames import Opcode

TRANSPORT_EXTENSION = "tapescan.transport"
SEND_BUFFER_BYTES = 64 * 1024  # the kernel doubles it; ~8 s of every scan's deltas


def cap_send_buffer(sock: socket.socket | None, size: int = SEND_BUFFER_BYTES) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


PongSink = Callable[[bytes], None]


class DirectWebSocketProtocol(WebSocketProtocol):
    _pong_sink: PongSink | None = None

    def _report_pongs(self, sink: PongSink) -> None:
        self._pong_sink = sink

    async def read_frame(self, max_size: int | None) -> Any:
        frame = await super().read_frame(max_size)
        if frame.opcode is Opcode.PONG and self._pong_sink is not None:
            self._pong_sink(bytes(frame.data))
        return frame

    async def run_asgi(self) -> None:
        cap_send_buffer(self.transport.get_extra_info("socket"))
        self.scope["extensions"][TRANSPORT_EXTENSION] = {
            "transport": self.transport,
            # Direct writes may start only once the 101 response has been written.
            "handshake_completed": self.handshake_completed_event,
            "pongs": self._report_pongs,  # call with a function to be given each pong's payload
        }
        await super().run_asgi()
