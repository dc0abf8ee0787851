"""REST under /api/v1 against a real server: pagination, errors, admin token, scan CRUD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.server import ADMIN_TOKEN, Server, start_server

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("rest"))
    yield running
    running.stop()


def get(server: Server, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1{path}", params=params, timeout=10)


def test_lists_are_paginated_with_an_opaque_cursor(server: Server) -> None:
    first = get(server, "/scans", limit=7).json()
    assert len(first["items"]) == 7
    second = get(server, "/scans", limit=7, cursor=first["next_cursor"]).json()
    third = get(server, "/scans", limit=7, cursor=second["next_cursor"]).json()
    ids = [s["id"] for page in (first, second, third) for s in page["items"]]
    assert len(ids) == len(set(ids)) == 18
    assert third["next_cursor"] is None
    assert get(server, "/scans", limit=1001).status_code == 422
    bad = get(server, "/scans", cursor="garbage!")
    assert bad.status_code == 400
    assert bad.json()["error"] == "bad_cursor"


def test_results_session_symbol_and_columns(server: Server) -> None:
    results = get(server, "/scans/top_gainers/results", limit=5).json()
    assert results["columns"][0] == "symbol"
    assert len(results["rows"]) <= 5
    session = get(server, "/session").json()
    assert session["date"] == "2026-11-24"
    assert session["phase"] == "regular"
    columns = get(server, "/scans/columns", limit=1000).json()["items"]
    assert {"rvol", "gap_pct", "halted"} <= {c["name"] for c in columns}
    if results["rows"]:
        symbol = results["rows"][0][0]
        values = get(server, f"/symbols/{symbol}").json()["values"]
        assert values["symbol"] == symbol
        assert abs(values["change_pct"] - results["rows"][0][2]) <= 0.5  # later and unrounded


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/scans/nope", 404, "unknown_scan"),
        ("/scans/nope/results", 404, "unknown_scan"),
        ("/symbols/NOPE1", 404, "unknown_symbol"),
        ("/scans/top_gainers/results?at=2020-01-02T15:00:00Z", 404, "no_history"),
        ("/scans/top_gainers/results?at=yesterday", 400, "bad_instant"),
        ("/scans/top_gainers/results?at=2026-11-24T10:00:00", 400, "bad_instant"),
        ("/scans/top_gainers/events?cursor=xyz", 400, "bad_cursor"),
        ("/symbols/AAPL/bars?interval=5m", 422, "invalid_request"),
        ("/symbols/NOPE1/bars", 404, "unknown_symbol"),
        ("/symbols/AAPL/bars?limit=1001", 422, "invalid_request"),
    ],
)
def test_errors_are_json_a_person_can_act_on(
    server: Server, path: str, status: int, code: str
) -> None:
    response = httpx.get(f"{server.url}/api/v1{path}", timeout=10)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code
    assert len(body["message"]) > 10


def test_admin_endpoints_need_the_token(server: Server) -> None:
    scan = {"id": "needs_token", "sort": {"field": "volume"}}
    assert httpx.post(f"{server.url}/api/v1/scans", json=scan).status_code == 401
    wrong = httpx.post(
        f"{server.url}/api/v1/scans", json=scan, headers={"Authorization": "Bearer no"}
    )
    assert wrong.status_code == 403
    assert httpx.delete(f"{server.url}/api/v1/scans/top_gainers").status_code == 401


def test_create_edit_and_delete_a_scan(server: Server) -> None:
    scan = {
        "id": "cheap_runners",
        "title": "Cheap runners",
        "limit": 20,
        "filters": [
            {"field": "price", "op": "<", "value": 10},
            {"field": "change_pct", "op": ">", "value": 0},
        ],
        "sort": {"field": "change_pct", "direction": "desc"},
        "columns": ["price", "change_pct", "volume"],
    }
    created = httpx.post(f"{server.url}/api/v1/scans", json=scan, headers=AUTH)
    assert created.status_code == 201, created.text
    assert httpx.post(f"{server.url}/api/v1/scans", json=scan, headers=AUTH).status_code == 409
    results = get(server, "/scans/cheap_runners/results").json()
    assert results["columns"] == ["symbol", "price", "change_pct", "volume"]
    assert all(row[1] < 10 for row in results["rows"])
    edited = httpx.put(
        f"{server.url}/api/v1/scans/cheap_runners", json={**scan, "limit": 5}, headers=AUTH
    )
    assert edited.status_code == 200
    assert len(get(server, "/scans/cheap_runners/results").json()["rows"]) <= 5
    assert httpx.delete(f"{server.url}/api/v1/scans/cheap_runners", headers=AUTH).status_code == 204
    assert get(server, "/scans/cheap_runners").status_code == 404
    builtin = httpx.delete(f"{server.url}/api/v1/scans/top_gainers", headers=AUTH)
    assert builtin.status_code == 409


def test_an_invalid_scan_gets_422_with_every_field_error(server: Server) -> None:
    bad = {
        "id": "bad",
        "limit": 500,
        "filters": [{"field": "nope", "op": ">", "value": 1}],
        "sort": {"field": "volume"},
    }
    response = httpx.post(f"{server.url}/api/v1/scans", json=bad, headers=AUTH)
    assert response.status_code == 422
    fields = {f["path"]: f["message"] for f in response.json()["fields"]}
    assert set(fields) == {"limit", "filters[0].field"}


def test_admin_is_off_without_a_configured_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(tmp_path_factory.mktemp("notoken"), token=None)
    try:
        response = httpx.post(f"{server.url}/api/v1/scans", json={"id": "x"}, headers=AUTH)
        assert response.status_code == 403
        assert "TAPESCAN_ADMIN_TOKEN" in response.json()["message"]
    finally:
        server.stop()


def test_metrics_and_openapi(server: Server) -> None:
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "tapescan_scan_cycles" in metrics
    assert 'tapescan_gc_pause_max_seconds{generation="2"}' in metrics
    gc = httpx.get(f"{server.url}/api/v1/health").json()["gc"]
    assert len(gc["collections"]) == 3
    assert gc["collections"][0] > 0  # a warmed-up server has collected
    assert gc["pause_ms_total"][0] > 0
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/v1/scans/{scan_id}/results" in spec["paths"]
    # every REST operation documents an example of its answer
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            answers = [
                response["content"]["application/json"].get("example")
                for status, response in operation["responses"].items()
                if status.startswith("2") and "content" in response
            ]
            if path.startswith("/api/v1") and method != "delete" and path != "/api/v1/health":
                assert any(a is not None for a in answers), f"{method} {path} has no example"
