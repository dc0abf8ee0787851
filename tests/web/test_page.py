"""The page against a real `tapescan run` (simulated market at 10:00 ET, 5x speed)."""

from __future__ import annotations

import json
import re
import secrets
import time

from playwright.sync_api import Locator, Page, expect

from tests.web.conftest import ARTIFACTS, RunningServer

DEFAULT_PANELS = (
    "top_gainers",
    "gappers_up",
    "high_rvol",
    "top_losers",
    "momentum_up",
    "volume_spikes",
)


def rows(page: Page, scan: str) -> Locator:
    return page.get_by_test_id(f"panel-{scan}").locator("tbody tr")


def open_builder(page: Page) -> Locator:
    page.goto("/")
    expect(rows(page, "top_gainers").first).to_be_visible(timeout=10_000)
    page.get_by_test_id("new-scan-button").click()
    builder = page.get_by_test_id("scan-builder")
    expect(builder).to_be_visible()
    return builder


def test_page_loads_and_tables_fill_within_5_s(page: Page) -> None:
    started = time.monotonic()
    page.goto("/")
    for scan in DEFAULT_PANELS:
        expect(page.get_by_test_id(f"panel-{scan}")).to_be_visible()
    for scan in ("top_gainers", "top_losers"):
        expect(rows(page, scan).first).to_be_visible(timeout=5_000)
    assert time.monotonic() - started < 5.5
    header = page.get_by_test_id("panel-top_gainers").locator("thead th")
    expect(header.first).to_have_text("Symbol")
    expect(header).to_have_count(6)  # symbol + the scan's five columns
    expect(page.get_by_test_id("et-clock")).to_have_text(re.compile(r"^10:\d\d:\d\d$"))
    expect(page.get_by_test_id("et-date")).to_contain_text("Nov 24, 2026")
    expect(page.get_by_test_id("session-phase")).to_have_attribute("data-phase", "regular")
    expect(page.get_by_test_id("feed-state")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("feed-lag")).to_have_text(re.compile(r"^lag [\d.]+ m?s$"))
    expect(page.get_by_test_id("stale-warning")).to_be_hidden()
    saved = page.evaluate("localStorage.getItem('tapescan.layout.v1')")
    assert [p["scan"] for p in json.loads(saved)["panels"]] == list(DEFAULT_PANELS)

    ARTIFACTS.mkdir(exist_ok=True)
    expect(rows(page, "high_rvol").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "page-1280x720.png"))


def test_a_cell_flashes_when_its_value_changes(page: Page) -> None:
    page.goto("/")
    flashing = page.locator(
        "[data-testid^='panel-'] td.flash-up, [data-testid^='panel-'] td.flash-down"
    )
    expect(flashing.first).to_be_attached(timeout=10_000)
    cls = flashing.first.get_attribute("class") or ""
    assert "flash-up" in cls or "flash-down" in cls


def test_clicking_a_symbol_opens_the_side_panel_with_values_and_a_chart(page: Page) -> None:
    page.goto("/")
    first = rows(page, "top_gainers").first
    expect(first).to_be_visible(timeout=10_000)
    symbol = first.get_attribute("data-symbol")
    assert symbol
    first.click()
    panel = page.get_by_test_id("symbol-panel")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("symbol-title")).to_have_text(symbol)
    expect(page.get_by_test_id("symbol-chart")).to_be_visible()
    expect(page.get_by_test_id("value-price")).to_be_visible()
    expect(page.get_by_test_id("value-rvol")).to_be_visible()
    # the chart is drawn from the history store's 1-minute bars (tests/web/test_chart.py)
    expect(page.get_by_test_id("chart-note")).to_contain_text(
        "one-minute bars from the history store", timeout=10_000
    )
    box = page.get_by_test_id("symbol-chart").bounding_box()
    assert box is not None
    assert box["width"] > 200
    assert box["height"] > 100

    # keyboard: Escape closes and gives focus back; Enter on a row opens it again
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    row = page.get_by_test_id(f"row-top_gainers-{symbol}")
    row.focus()
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("symbol-title")).to_have_text(symbol)


def test_user_columns_are_chosen_per_panel_and_kept(page: Page) -> None:
    page.goto("/")
    expect(rows(page, "top_gainers").first).to_be_visible(timeout=10_000)
    page.get_by_test_id("columns-toggle-top_gainers").click()
    popover = page.get_by_test_id("columns-popover-top_gainers")
    expect(popover).to_be_visible()
    popover.get_by_test_id("column-option-rvol").uncheck()
    popover.get_by_test_id("column-option-sector").check()  # not streamed by this scan
    page.keyboard.press("Escape")
    expect(popover).to_be_hidden()
    expect(page.get_by_test_id("sort-top_gainers-rvol")).to_have_count(0)
    expect(page.get_by_test_id("sort-top_gainers-sector")).to_be_visible()
    sector = rows(page, "top_gainers").first.locator("td[data-col='sector']")
    expect(sector).not_to_have_text("—")  # filled from /api/v1/symbols/{symbol}
    expect(page.get_by_test_id("sort-top_gainers-price")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("sort-top_gainers-sector")).to_be_visible()
    expect(page.get_by_test_id("sort-top_gainers-rvol")).to_have_count(0)


def test_a_scan_made_in_the_builder_appears_as_a_live_panel(
    page: Page, server: RunningServer
) -> None:
    builder = open_builder(page)
    scan_id = f"web_{secrets.token_hex(3)}"
    builder.get_by_test_id("builder-id").fill(scan_id)
    builder.get_by_test_id("builder-title").fill("Web movers")
    builder.get_by_test_id("filter-row-0").get_by_test_id("filter-value").fill("1")
    builder.get_by_test_id("builder-limit").fill("15")
    builder.get_by_test_id("builder-column-select").select_option("gap_pct")
    builder.get_by_test_id("builder-add-column").click()
    builder.get_by_test_id("builder-token").fill(server.token)
    builder.get_by_test_id("builder-submit").click()

    expect(builder).to_be_hidden()
    panel = page.get_by_test_id(f"panel-{scan_id}")
    expect(panel).to_be_visible()
    expect(panel.locator(".panel-title")).to_have_text("Web movers")
    expect(panel.get_by_test_id(f"sort-{scan_id}-gap_pct")).to_be_visible()
    expect(rows(page, scan_id).first).to_be_visible(timeout=5_000)
    assert rows(page, scan_id).count() <= 15
    assert page.evaluate("localStorage.getItem('tapescan.adminToken')") == server.token

    # edit it: PUT with the saved token (asked only once)
    page.get_by_test_id(f"menu-toggle-{scan_id}").click()
    page.get_by_test_id(f"menu-edit-{scan_id}").click()
    expect(builder).to_be_visible()
    expect(builder.get_by_test_id("builder-token")).to_be_hidden()
    builder.get_by_test_id("builder-title").fill("Web movers, edited")
    builder.get_by_test_id("builder-submit").click()
    expect(builder).to_be_hidden()
    expect(panel.locator(".panel-title")).to_have_text("Web movers, edited")


def test_an_invalid_scan_shows_each_error_next_to_its_field(
    page: Page, server: RunningServer
) -> None:
    builder = open_builder(page)
    builder.get_by_test_id("builder-id").fill("web_invalid")
    builder.get_by_test_id("builder-title").fill("Invalid")
    builder.get_by_test_id("builder-limit").fill("500")
    builder.get_by_test_id("filter-row-1").get_by_test_id("filter-value").fill("abc")
    builder.get_by_test_id("builder-token").fill(server.token)
    builder.get_by_test_id("builder-submit").click()

    limit_field = builder.get_by_test_id("builder-limit-field")
    error = limit_field.get_by_test_id("field-error-limit")
    expect(error).to_be_visible()
    expect(error).to_contain_text("from 1 to 200")
    limit = builder.get_by_test_id("builder-limit")
    expect(limit).to_have_attribute("aria-invalid", "true")
    expect(limit).to_have_attribute("aria-describedby", error.get_attribute("id") or "?")
    value_error = builder.get_by_test_id("filter-row-1").get_by_test_id(
        "field-error-filters[1].value"
    )
    expect(value_error).to_contain_text("needs a number")
    expect(builder).to_be_visible()
    expect(page.get_by_test_id("panel-web_invalid")).to_have_count(0)

    # fixing the fields clears the errors and saves the scan
    limit.fill("20")
    builder.get_by_test_id("filter-row-1").get_by_test_id("filter-value").fill("1")
    builder.get_by_test_id("builder-submit").click()
    expect(builder).to_be_hidden()
    expect(page.get_by_test_id("panel-web_invalid")).to_be_visible()


def test_a_wrong_admin_token_is_reported_and_not_kept(page: Page) -> None:
    builder = open_builder(page)
    builder.get_by_test_id("builder-id").fill("web_denied")
    builder.get_by_test_id("builder-token").fill("not-the-token")
    builder.get_by_test_id("builder-submit").click()
    expect(builder.get_by_test_id("field-error-token")).to_contain_text("token")
    assert page.evaluate("localStorage.getItem('tapescan.adminToken')") is None
