"""The symbol panel's intraday chart: today's 1-minute bars from the history store, kept live.

The server (conftest.py) simulates 2026-11-24 from 10:00 ET at 5x: a new minute every 12 s.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
from playwright.sync_api import Page, Request, expect

from tests.web.conftest import ARTIFACTS, RunningServer

NOTE = "[data-testid='chart-note']"


def open_first_gainer(page: Page) -> str:
    page.goto("/")
    first = page.get_by_test_id("panel-top_gainers").locator("tbody tr").first
    expect(first).to_be_visible(timeout=10_000)
    symbol = first.get_attribute("data-symbol")
    assert symbol
    first.click()
    expect(page.get_by_test_id("symbol-title")).to_have_text(symbol)
    return symbol


def api_bars(server: RunningServer, symbol: str, to: str | None = None) -> list[dict[str, Any]]:
    """Today's minute bars from the API (up to `to`, exclusive), every page of 100."""
    params: dict[str, str | int] = {"interval": "1m", "limit": 100}
    if to is not None:
        params["to"] = to
    bars: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):  # a day has at most 960 minutes: 10 pages
        page_params = {**params, "cursor": cursor} if cursor else params
        response = httpx.get(
            f"{server.url}/api/v1/symbols/{symbol}/bars", params=page_params, timeout=10
        )
        response.raise_for_status()
        body = response.json()
        bars += body["bars"]
        cursor = body["next_cursor"]
        if cursor is None:
            return bars
    raise AssertionError("the bars API kept giving cursors")


def session_vwap(bars: list[dict[str, Any]]) -> float:
    volume = sum(b["volume"] for b in bars)
    value = sum((b["vwap"] if b["vwap"] is not None else b["close"]) * b["volume"] for b in bars)
    return float(value / volume)


def chart_state(page: Page) -> dict[str, str]:
    """The chart note's data attributes and text, read at one instant."""
    state: dict[str, str] = page.locator(NOTE).evaluate(
        "note => ({ ...note.dataset, text: note.textContent })"
    )
    return state


def check_against_api(server: RunningServer, symbol: str, state: dict[str, str]) -> int:
    """The page's bars are exactly the API's bars of today up to the last one the page holds."""
    count = int(state["bars"])
    assert count > 0
    last = dt.datetime.fromisoformat(state["last"])
    bars = api_bars(server, symbol, to=(last + dt.timedelta(seconds=1)).isoformat())
    assert count == len(bars), f"page holds {count} bars, the API returns {len(bars)}"
    assert dt.datetime.fromisoformat(bars[-1]["t"]) == last
    assert len({b["t"] for b in bars}) == len(bars)
    assert abs(float(state["vwap"]) - session_vwap(bars)) <= 0.5e-4 + 1e-9
    assert f"{count} one-minute bars from the history store" in state["text"]
    # the page is at most one update behind what the API has now
    assert len(api_bars(server, symbol)) >= count
    return count


def test_the_chart_holds_todays_bars_and_grows_as_minutes_are_recorded(
    page: Page, server: RunningServer
) -> None:
    symbol = open_first_gainer(page)
    note = page.get_by_test_id("chart-note")
    expect(note).to_have_attribute("data-state", "bars", timeout=10_000)
    expect(note).not_to_contain_text("501")
    count = check_against_api(server, symbol, chart_state(page))

    # the legend shows the previous close of /symbols/{symbol}, and the VWAP line is drawn
    prev_close = httpx.get(f"{server.url}/api/v1/symbols/{symbol}", timeout=10).json()["values"][
        "prev_close"
    ]
    legend = page.get_by_test_id("chart-legend")
    expect(legend.locator("[data-key='prev-close'] .num")).to_have_text(f"{prev_close:,.2f}")
    expect(legend.locator("[data-key='vwap']")).to_be_visible()
    expect(legend.locator("[data-key='volume']")).to_be_visible()
    chart = page.get_by_test_id("symbol-chart")
    expect(chart).to_have_attribute(
        "aria-label", re.compile(rf"\b{count} one-minute bars .* session VWAP [\d.,]+")
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.get_by_test_id("symbol-panel").screenshot(path=str(ARTIFACTS / "symbol-chart.png"))

    # a new minute every 12 s, an update every 15 s: the count grows while the panel is open
    page.wait_for_function(
        "([selector, count]) => Number(document.querySelector(selector).dataset.bars) > count",
        arg=[NOTE, count],
        timeout=60_000,
    )
    assert check_against_api(server, symbol, chart_state(page)) > count


def test_without_bars_the_chart_says_so_and_recovers_and_stops_when_closed(
    page: Page, server: RunningServer
) -> None:
    page.clock.install()  # timers run in real time, and can be fast-forwarded
    failing = "**/api/v1/symbols/*/bars*"
    page.route(
        failing,
        lambda route: route.fulfill(
            status=503, json={"error": "store_down", "message": "the store is down"}
        ),
    )
    symbol = open_first_gainer(page)
    note = page.get_by_test_id("chart-note")
    expect(note).to_have_attribute("data-state", "fallback", timeout=10_000)
    expect(note).to_contain_text("seen since this page opened")
    expect(note).to_contain_text("503")
    expect(note).not_to_contain_text("501")
    expect(note).not_to_have_attribute("data-bars", re.compile(".*"))

    # the bars come back: the next update (15 s later) loads them
    page.unroute(failing)
    with page.expect_request(f"**/symbols/{symbol}/bars?*"):
        page.clock.fast_forward(16_000)
    expect(note).to_have_attribute("data-state", "bars", timeout=10_000)
    check_against_api(server, symbol, chart_state(page))

    # an open panel keeps asking; a closed one does not
    with page.expect_request(f"**/symbols/{symbol}/bars?*from=*"):
        page.clock.fast_forward(16_000)
    expect(note).to_have_attribute("data-state", "bars")
    requests: list[str] = []

    def seen(request: Request) -> None:
        if "/bars" in request.url:
            requests.append(request.url)

    page.on("request", seen)
    page.get_by_test_id("symbol-close").click()
    expect(page.get_by_test_id("symbol-panel")).to_be_hidden()
    page.clock.fast_forward(60_000)
    # a request made after the fast-forward: any bars request its timers made came before it
    with page.expect_request("**/api/v1/health"):
        page.evaluate("fetch('/api/v1/health')")
    assert requests == []
