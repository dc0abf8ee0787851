"""The page while the server warms up: progress, not an epoch clock or empty panels.

A full-size universe (11,882 symbols) warms up for tens of seconds, long enough to look at the
page meanwhile; the server is stopped as soon as the page has been checked.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.api.server import Server
from tests.web.conftest import VIEWPORT


def test_the_page_shows_warm_up_progress_until_the_scans_run(
    browser: Browser, tmp_path: Path
) -> None:
    server = Server(tmp_path, "--start", "2026-11-24T10:00:00-05:00")
    try:
        health = server.health(lambda h: True, timeout_s=60)  # answering, still warming up
        assert not health["scans"]["warmed_up"], "warm-up ended before the page could look"
        context = browser.new_context(viewport=VIEWPORT, locale="en-US", base_url=server.url)
        errors: list[str] = []
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        banner = page.get_by_test_id("stale-warning")
        expect(banner).to_be_visible(timeout=10_000)
        expect(banner).to_contain_text(re.compile(r"Warming up: .+ \(\d[\d,]* of \d[\d,]*\)"))
        expect(page.get_by_test_id("panel-top_gainers")).to_contain_text("Warming up")
        # The market clock is the server's (2026-11-24), never the epoch of a scan not yet run.
        expect(page.get_by_test_id("et-date")).to_contain_text("2026")
        assert "1969" not in page.get_by_test_id("et-date").inner_text()
        assert not page.get_by_test_id("panel-top_gainers").locator(".panel-asof").inner_text()
        assert not errors, errors
        context.close()
    finally:
        server.stop()
