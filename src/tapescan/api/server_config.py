"""uvicorn as tapescan runs it: connection limits, header and keep-alive timeouts, a log that
cannot flood.

uvicorn closes idle keep-alive connections but gives a client all the time it likes to finish
its request headers (slowloris), and accepts connections until the process runs out of file
descriptors. ``GuardedH11Protocol`` closes a connection whose headers are not complete within
``http_header_timeout_s`` of its start (or of the previous answer), and closes new connections
at once beyond ``http_max_connections``. Header blocks are limited to ``MAX_HEADER_BYTES``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tapescan.api.log_limits import RepeatFilter
from tapescan.api.ws_transport import DirectWebSocketProtocol
from tapescan.config import Settings

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # h11's own default; request line and headers together
FD_RESERVE = 256  # descriptors kept for the store, the spill files and the logs
WS_MAX_FRAME_BYTES = 1 << 20  # frames over 64 KiB get an error; over 1 MiB a close (1009)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a hard connection cap."""

    header_timeout_s = 10.0
    max_connections = 2_048
    refused = 0  # connections closed at once for being over the cap (all instances)
    timed_out = 0  # connections closed for not finishing their headers in time
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            GuardedH11Protocol.refused += 1
            log.warning(
                "refusing a connection: %d open, http_max_connections is %d",
                len(self.connections) - 1,
                self.max_connections,
            )
            transport.abort()
            return
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        GuardedH11Protocol.timed_out += 1
        log.warning(
            "closing a connection: request headers not complete within %g s",
            self.header_timeout_s,
        )
        if self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # headers are in (or the connection is switching)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers, if one comes

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


_TIMEOUT_BODY = b'{"error":"header_timeout","message":"the request headers did not arrive in time"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def install_log_limits(repeat_filter: logging.Filter | None = None) -> logging.Filter:
    """The repeat filter on every handler of the root and uvicorn loggers."""
    chosen = repeat_filter or RepeatFilter()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                handler.addFilter(chosen)
    return chosen


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``tapescan run``."""
    descriptors = raise_fd_limit()
    max_connections = min(settings.http_max_connections, max(descriptors - FD_RESERVE, 16))
    if max_connections < settings.http_max_connections:
        log.warning(
            "only %d open files allowed: at most %d connections (http_max_connections %d)",
            descriptors,
            max_connections,
            settings.http_max_connections,
        )
    protocol = type(
        "TapescanHttpProtocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": settings.http_header_timeout_s, "max_connections": max_connections},
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="off",
        http=protocol,
        ws=DirectWebSocketProtocol,
        ws_per_message_deflate=False,  # frames are pre-framed once for every client
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_max_size=WS_MAX_FRAME_BYTES,
        limit_concurrency=max_connections,
        timeout_keep_alive=int(max(1, round(settings.http_keep_alive_s))),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    install_log_limits()
    return config
