"""Connection limits with real sockets on 127.0.0.1: half-sent requests are closed after the
header timeout, connections beyond the cap are closed at once, and the server keeps answering.
Counts are bounded and every socket is closed by the test."""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tapescan.api.log_limits import RepeatFilter
from tests.api.server import Server, start_server

HALF_SENT = 300
MAX_CONNECTIONS = 100
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAPESCAN_HTTP_MAX_CONNECTIONS", str(MAX_CONNECTIONS))
        patch.setenv("TAPESCAN_HTTP_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
        patch.setenv("TAPESCAN_HTTP_BODY_TIMEOUT_S", "1")
        running = start_server(tmp_path_factory.mktemp("limits"))
    yield running
    running.stop()


def closed_within(socks: list[socket.socket], timeout_s: float) -> int:
    """How many of ``socks`` the server closed (EOF or reset) within ``timeout_s``."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + timeout_s
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(deadline - time.monotonic(), 0)):
            ready = key.fileobj
            if not isinstance(ready, socket.socket):
                continue
            try:
                data = ready.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data or data.startswith(b"HTTP/1.1 408"):
                selector.unregister(ready)
                closed += 1
    selector.close()
    return closed


def test_half_sent_requests_are_cut_off_and_the_server_keeps_answering(server: Server) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(HALF_SENT):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
            socks.append(sock)
        began = time.monotonic()
        # Beyond the cap, connections are closed at once; the server still answers.
        assert closed_within(socks[MAX_CONNECTIONS:], 2.0) == HALF_SENT - MAX_CONNECTIONS
        # The others are closed once their header time is up.
        assert closed_within(socks[:MAX_CONNECTIONS], HEADER_TIMEOUT_S + 5) == MAX_CONNECTIONS
        assert time.monotonic() - began < HEADER_TIMEOUT_S + 5
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_a_trickled_body_gets_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/scans HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            b"test-admin-token\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = _response(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"body_timeout"' in answer


def _response(sock: socket.socket) -> bytes:
    """One whole response: the head and the body may come in separate segments."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_an_idle_new_connection_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        began = time.monotonic()
        answer = sock.recv(65536)  # nothing sent at all
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    assert time.monotonic() - began < HEADER_TIMEOUT_S + 3


def test_repeated_log_lines_are_limited_and_counted() -> None:
    limiter = RepeatFilter(repeats=3, window_s=0.2)
    records = [
        logging.LogRecord("x", logging.WARNING, __file__, 1, "refusing %d", (i,), None)
        for i in range(50)
    ]
    passed = [r for r in records if limiter.filter(r)]
    assert len(passed) == 3
    time.sleep(0.25)  # the window is wall time; nothing to await
    later = logging.LogRecord("x", logging.WARNING, __file__, 1, "refusing %d", (0,), None)
    assert limiter.filter(later)
    assert "47 more like it suppressed" in later.getMessage()
