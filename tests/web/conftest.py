"""Browser tests of the web page: a real `tapescan run` and Debian's chromium driven by Playwright.

Chromium is never downloaded: Playwright drives /usr/bin/chromium (Debian package `chromium`,
which `scripts/test` installs when run as root). Without it these tests skip, or fail when
TAPESCAN_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 720}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
START_DEADLINE_S = 60.0


def require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    message = (
        f"{CHROMIUM} is missing: the browser tests drive Debian's chromium "
        "(apt-get install chromium; `scripts/test` installs it when run as root)"
    )
    if os.environ.get("TAPESCAN_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_until_scanning(server: RunningServer) -> dict[str, Any]:
    """Poll /api/v1/health (another process is starting) until a scan cycle has run."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"tapescan exited early:\n{server.log_tail()}")
        try:
            response = httpx.get(f"{server.url}/api/v1/health", timeout=2)
            body: dict[str, Any] = response.json()
            if response.status_code == 200 and body["scans"]["cycles"] >= 1:
                return body
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.1)  # nothing to await in another process: poll
    raise AssertionError(f"tapescan did not scan within {START_DEADLINE_S} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_chromium()  # no browser, no reason to start a server
    workdir = tmp_path_factory.mktemp("web-server")
    port = free_port()
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TAPESCAN_ADMIN_TOKEN": token}
    log = workdir / "tapescan.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tapescan",
                "run",
                "--symbols",
                "800",
                "--port",
                str(port),
                "--start",
                "2026-11-24T10:00:00-05:00",
                "--speed",
                "5",
            ],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = RunningServer(f"http://127.0.0.1:{port}", token, process, log)
    try:
        wait_until_scanning(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    require_chromium()
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    launched = playwright_driver.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    yield launched
    launched.close()


@dataclass
class PageErrors:
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """A fresh page (its own localStorage) at 1280x720; uncaught script errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", base_url=server.url)
    new_page = context.new_page()
    seen = PageErrors()
    new_page.on("pageerror", lambda error: seen.errors.append(str(error)))
    yield new_page
    context.close()
    assert not seen.errors, f"uncaught errors in the page: {seen.errors}"
