"""uvicorn's WebSocket protocol, with the connection's transport made available to the app.

The fan-out writes each shared, pre-framed message straight to every client's transport: a
server-to-client frame is unmasked, so its bytes are the same for every client. This avoids the
several event-loop hops of an ASGI send per client and frame. The library still writes its own
frames (pings, close); every write is one whole frame, so they never interleave.

The socket's send buffer is capped: left to autotuning, Linux lets it grow to megabytes
(net.ipv4.tcp_wmem), so a peer that stopped reading would absorb minutes of frames in the kernel
before the transport's own buffer (which the fan-out checks against ``ws_buffer_bytes``) showed
it. With the cap, a stalled peer is seen as backlogged within seconds.
"""

from __future__ import annotations

import contextlib
import socket
import warnings

from uvicorn.config import UvicornDeprecationWarning

with warnings.catch_warnings():
    # uvicorn plans to point `websockets` at its sans-I/O implementation; until the direct
    # transport access is ported there, this subclass keeps the legacy one (see the note).
    warnings.simplefilter("ignore", UvicornDeprecationWarning)
    from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol

TRANSPORT_EXTENSION = "tapescan.transport"
SEND_BUFFER_BYTES = 64 * 1024  # the kernel doubles it; ~8 s of every scan's deltas


def cap_send_buffer(sock: socket.socket | None, size: int = SEND_BUFFER_BYTES) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class DirectWebSocketProtocol(WebSocketProtocol):
    async def run_asgi(self) -> None:
        cap_send_buffer(self.transport.get_extra_info("socket"))
        self.scope["extensions"][TRANSPORT_EXTENSION] = {
            "transport": self.transport,
            # Direct writes may start only once the 101 response has been written.
            "handshake_completed": self.handshake_completed_event,
        }
        await super().run_asgi()
