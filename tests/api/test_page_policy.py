"""The page works under its Content-Security-Policy: Debian's chromium loads it from a real
server and nothing is refused (no console CSP report), the live stream connects, rows arrive and
the symbol chart draws; another origin cannot frame it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.server import Server, start_server
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    running = start_server(tmp_path_factory.mktemp("policy"))
    yield running
    running.stop()


def test_the_page_runs_under_its_policy_with_nothing_refused(server: Server) -> None:
    refused: list[str] = []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=server.url)
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.on("pageerror", lambda e: refused.append(str(e)))
            page.goto("/")
            feed = page.locator('[data-testid="feed-state"]')
            playwright.expect(feed).not_to_have_attribute("data-state", "unknown", timeout=20_000)
            rows = page.locator(".panel tbody tr")
            playwright.expect(rows.first).to_be_visible(timeout=20_000)
            rows.first.click()
            playwright.expect(page.locator('[data-testid="symbol-panel"]')).to_be_visible()
            page.wait_for_timeout(1_000)  # the chart's bars arrive by fetch; let them draw
            framed = browser.new_page()
            framed.set_content(f'<iframe src="{server.url}/"></iframe>')
            framed.wait_for_timeout(1_000)
            inner = framed.frames[-1]
            assert not inner.url.startswith(server.url)  # refused: chrome's error page instead
        finally:
            browser.close()
    assert not refused, refused
