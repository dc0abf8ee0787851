"""uvicorn's WebSocket protocol, with the connection's transport made available to the app.

The fan-out writes each shared, pre-framed message straight to every client's transport: a
server-to-client frame is unmasked, so its bytes are the same for every client. This avoids the
several event-loop hops of an ASGI send per client and frame. The library still writes its own
frames (pings, close); every write is one whole frame, so they never interleave.
"""

from __future__ import annotations

import warnings

from uvicorn.config import UvicornDeprecationWarning

with warnings.catch_warnings():
    # uvicorn plans to point `websockets` at its sans-I/O implementation; until the direct
    # transport access is ported there, this subclass keeps the legacy one (see the note).
    warnings.simplefilter("ignore", UvicornDeprecationWarning)
    from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol

TRANSPORT_EXTENSION = "tapescan.transport"


class DirectWebSocketProtocol(WebSocketProtocol):
    async def run_asgi(self) -> None:
        self.scope["extensions"][TRANSPORT_EXTENSION] = {
            "transport": self.transport,
            # Direct writes may start only once the 101 response has been written.
            "handshake_completed": self.handshake_completed_event,
        }
        await super().run_asgi()
