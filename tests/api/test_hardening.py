"""Hostile input against a real server on 127.0.0.1: every error is 4xx JSON, bodies are capped
and the admin token is checked before a body is read, Host and Origin are checked, the page gets
its security headers, and bad WebSocket frames leave the connection usable."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.api.server import ADMIN_TOKEN, Server, start_server

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("hardening"))
    yield running
    running.stop()


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def a_symbol(server: Server) -> str:
    rows = httpx.get(f"{server.url}/api/v1/scans/top_gainers/results?limit=1").json()["rows"]
    return str(rows[0][0]) if rows else "AAPL"


BAD_GETS = [
    ("/scans/top_gainers/results?at=2010-01-04T15:00:00Z", 400, "outside_calendar"),
    ("/scans/top_gainers/results?at=2028-06-01T15:00:00Z", 400, "outside_calendar"),
    ("/scans/top_gainers/results?at=0001-01-01T00:00:00%2B00:00", 400, "bad_instant"),
    ("/scans/top_gainers/results?at=9999-12-31T23:59:59%2B00:00", 400, "bad_instant"),
    ("/scans/top_gainers/events?from=9999-12-31T23:59:59%2B00:00", 400, "bad_instant"),
    ("/scans?cursor=" + cursor(b'{"o":' + deep(3000) + b"}"), 400, "bad_cursor"),
    ("/scans?cursor=" + cursor(b'{"o":true}'), 400, "bad_cursor"),
    ("/scans/top_gainers/events?cursor=" + cursor(b'{"k":["x","y","z"]}'), 400, "bad_cursor"),
    ("/scans/top_gainers/events?cursor=" + cursor(b'{"k":[{},{},{}]}'), 400, "bad_cursor"),
    ("/symbols/{symbol}/bars?cursor=" + cursor(b'{"k":[5]}'), 400, "bad_cursor"),
    ("/symbols/{symbol}/bars?interval=1d&cursor=" + cursor(b'{"k":["x"]}'), 400, "bad_cursor"),
    ("/symbols/{symbol}/bars?from=0001-01-01T00:00:00%2B00:00", 400, "bad_instant"),
    ("/symbols/{symbol}/bars?interval=1d&from=0001-01-01", 400, "bad_date"),
    ("/nope", 404, "not_found"),
]


@pytest.mark.parametrize(("path", "status", "code"), BAD_GETS)
def test_bad_queries_get_4xx_json(server: Server, path: str, status: int, code: str) -> None:
    url = f"{server.url}/api/v1{path.replace('{symbol}', a_symbol(server))}"
    response = httpx.get(url, timeout=10)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    assert len(response.json()["message"]) > 10


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"id":"x","sort":{"field":"volume"},"filters":' + deep(3000) + b"}", 400, "bad_json"),
        (
            json.dumps(
                {
                    "id": "big",
                    "sort": {"field": "volume"},
                    "filters": [{"field": "price", "op": ">", "value": int("9" * 400)}],
                }
            ).encode(),
            400,
            "bad_json",
        ),
        (b'{"id": NaN}', 400, "bad_json"),
        (b"{not json", 400, "bad_json"),
    ],
)
def test_bad_bodies_get_4xx_json(server: Server, body: bytes, status: int, code: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/scans", content=body, headers=AUTH, timeout=10)
    assert (response.status_code, response.json()["error"]) == (status, code), response.text


def test_framework_errors_use_the_documented_shape(server: Server) -> None:
    for response in (
        httpx.patch(f"{server.url}/api/v1/scans", headers=AUTH),
        httpx.get(f"{server.url}/api/v1/scans/top_gainers/nope"),
        httpx.get(f"{server.url}/docs"),  # off: it would load scripts from a CDN
    ):
        assert 400 <= response.status_code < 500
        assert set(response.json()) >= {"error", "message"}, response.text
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


def raw_request(server: Server, head: bytes, body: bytes = b"", wait_s: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return answer


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(server: Server) -> None:
    """The headers announce 200 MiB; only 1 KiB is sent. The answer comes at once."""
    head = (
        f"POST /api/v1/scans HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {200 << 20}\r\n\r\n"
    ).encode()
    began = time.monotonic()
    answer = raw_request(server, head, b"[" * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - began < 3


def test_bodies_over_the_cap_get_413_with_or_without_a_length(server: Server) -> None:
    big = b'{"id":"x","title":"' + b"a" * 100_000 + b'"}'
    response = httpx.post(f"{server.url}/api/v1/scans", content=big, headers=AUTH, timeout=10)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    chunked = httpx.post(f"{server.url}/api/v1/scans", content=chunks(), headers=AUTH, timeout=10)
    assert (chunked.status_code, chunked.json()["error"]) == (413, "body_too_large")


def test_the_page_gets_security_headers(server: Server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:{port}", True),
        ("localhost:{port}", True),
        ("[::1]:{port}", True),
        ("evil.example:{port}", False),  # DNS rebinding: the attacker's name, our address
        ("127.0.0.1:1", False),
        ("localhost", True),  # no port: curl-like clients on port 80 conventions
        ("evil.example", False),
    ],
)
def test_host_must_name_this_server(server: Server, host: str, allowed: bool) -> None:
    response = httpx.get(
        f"{server.url}/api/v1/session", headers={"Host": host.format(port=server.port)}
    )
    assert response.status_code == (200 if allowed else 421), response.text
    if not allowed:
        assert response.json()["error"] == "wrong_host"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://127.0.0.1:{port}", True),
        ("http://evil.example", False),
        ("http://127.0.0.1:1", False),
        ("null", False),
    ],
)
async def test_websocket_origin_must_be_the_page_or_a_cors_origin(
    server: Server, origin: str | None, allowed: bool
) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    given = origin.format(port=server.port) if origin else None
    if allowed:
        async with connect(url, origin=given) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "status"
    else:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=given):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403


async def test_deep_and_big_frames_get_errors_and_the_connection_stays_usable(
    server: Server,
) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
        await ws.recv()  # status
        for frame, code in (
            (deep(100_000).decode(), "frame_too_large"),
            (deep(20_000).decode(), "bad_json"),
            ('{"op":"ping","x":' + deep(500).decode() + "}", "bad_json"),
            (b"\x91" * 5000 + b"\x90", "bad_json"),  # binary frames are JSON on a JSON socket
        ):
            await ws.send(frame)
            reply = await _next_not_status(ws)
            assert (reply["type"], reply["code"]) == ("error", code)
            await ws.send('{"op":"ping"}')
            assert (await _next_not_status(ws))["type"] == "pong"


async def test_deep_msgpack_frames_get_bad_json(server: Server) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}/ws?format=msgpack") as ws:
        await ws.recv()
        await ws.send(b"\x91" * 5000 + b"\x90")  # 5,000 nested one-element arrays
        reply = msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(decode=False), 10))
        while reply["type"] == "status":
            reply = msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(decode=False), 10))
        assert (reply["type"], reply["code"]) == ("error", "bad_json")


async def test_frames_over_1_mib_close_the_connection_with_1009(server: Server) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * ((1 << 20) + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            await _drain(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def _drain(ws: object) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 10)  # type: ignore[attr-defined]


async def _next_not_status(ws: object) -> dict[str, object]:
    while True:
        message: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[attr-defined]
        if message["type"] != "status":
            return message
