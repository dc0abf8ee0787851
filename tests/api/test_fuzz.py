"""A hypothesis fuzz pass against a real server on 127.0.0.1: every REST operation in the app's
own OpenAPI schema (so new routes are covered without editing this file) with random path and
query values and bodies, and random WebSocket frames. No answer may be 5xx, every error must be
JSON ``{"error","message"}``, and the WebSocket connection must stay usable throughout.

The counts tried are printed (run with -s) and recorded in docs/hardening.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.api.server import ADMIN_TOKEN, Server, start_server

# 600 of each in the suite (~25 s); TAPESCAN_FUZZ_EXAMPLES=1500 (or more) for a longer hunt
EXAMPLES = int(os.environ.get("TAPESCAN_FUZZ_EXAMPLES", "600"))
REST_EXAMPLES = EXAMPLES
WS_EXAMPLES = EXAMPLES
TRIED: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("fuzz"))
    yield running
    running.stop()
    print(f"\nfuzz counts: {TRIED}")


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as running:
        yield running


@pytest.fixture(scope="module")
def operations(client: httpx.Client) -> list[tuple[str, str, list[dict[str, Any]], bool]]:
    """(method, path, parameters, takes a body) of every operation the app documents."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, items in spec["paths"].items():
        for method, operation in items.items():
            found.append(
                (
                    method.upper(),
                    path,
                    operation.get("parameters", []),
                    "requestBody" in operation,
                )
            )
    assert len(found) >= 11
    return found


# Values that have broken parsers before, mixed with random text.
NASTY = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "9" * 400,
        "1e400",
        "NaN",
        "null",
        "true",
        "[]",
        "{}",
        "[" * 3000,
        "2010-01-04T15:00:00Z",
        "2028-06-01T15:00:00Z",
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59+00:00",
        "2026-11-24T15:00:00Z",
        "2026-11-24",
        "eyJvIjoieCJ9",  # {"o":"x"}
        "eyJrIjpbe30se30se31dfQ==",  # {"k":[{},{},{}]}
        "eyJrIjpbNV19",  # {"k":[5]}
        "../../etc/passwd",
        "%00",
        "\x00",
        "top_gainers",
        "AAPL",
        "1m",
        "1d",
    ]
)
VALUE = st.one_of(NASTY, st.text(max_size=60), st.integers().map(str))
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SCAN_KEYS = ["id", "title", "limit", "filters", "sort", "columns", "sessions", "description"]
SCAN_LIKE = st.dictionaries(st.sampled_from(SCAN_KEYS), JSON, max_size=8)
RAW_BODY = st.one_of(
    SCAN_LIKE.map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=4000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b'{"id":"x","filters":[{"field":"price","op":">","value":' + b"9" * 400 + b"}]}"),
)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str), response.text[:300]
        assert isinstance(body.get("message"), str), response.text[:300]


@settings(
    max_examples=REST_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_rest_operations_never_answer_5xx(
    client: httpx.Client,
    operations: list[tuple[str, str, list[dict[str, Any]], bool]],
    data: st.DataObject,
) -> None:
    method, path, parameters, takes_body = data.draw(st.sampled_from(operations))
    query: dict[str, str] = {}
    for parameter in parameters:
        if parameter["in"] == "path":
            value = data.draw(VALUE.filter(lambda v: v not in ("", ".", "..")))
            path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
        elif parameter["in"] == "query" and data.draw(st.booleans()):
            query[parameter["name"]] = data.draw(VALUE)
    headers = {"Content-Type": "application/json"}
    if data.draw(st.booleans()):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    body = data.draw(RAW_BODY) if takes_body else None
    if method == "DELETE" and not path.startswith("/api/v1/scans/fz"):
        headers.pop("Authorization", None)  # keep the built-in and test scans
    check(client.request(method, path, params=query, content=body, headers=headers))
    TRIED["rest"] = TRIED.get("rest", 0) + 1


FRAME_JSON = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"op": st.sampled_from(["subscribe", "unsubscribe", "resync", "ping", "x"])},
        optional={"scans": JSON, "scan": JSON},
    ),
)
FRAME = st.one_of(
    FRAME_JSON.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=30_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=30_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.just("x" * (70 * 1024)),
)


def usable(ws: ClientConnection) -> None:
    """The connection answers a ping (other messages are skipped)."""
    ws.send('{"op":"ping"}')
    for _ in range(10_000):
        message = json.loads(ws.recv(timeout=10))
        if message["type"] == "pong":
            return
        assert message["type"] in ("status", "snapshot", "delta", "error", "unsubscribed")
    raise AssertionError("no pong")


@pytest.fixture(scope="module")
def socket_client(server: Server) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
        yield ws


@settings(
    max_examples=WS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(frame=FRAME)
def test_websocket_frames_never_drop_the_connection(
    socket_client: ClientConnection, frame: str | bytes
) -> None:
    try:
        socket_client.send(frame)
        usable(socket_client)
    except ConnectionClosed as closed:
        raise AssertionError(f"the server dropped the connection after {frame[:80]!r}") from closed
    TRIED["websocket"] = TRIED.get("websocket", 0) + 1
