"""The page's side of the /ws protocol, against a scripted socket (Playwright's WebSocket route).

The page and REST come from the real server; only /ws is replaced, so each frame and each gap is
chosen by the test: snapshot then deltas by seq/prev_seq, resync on a gap, flashes, sorting,
alerts with their cooldown, the stale warning and reconnecting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, WebSocketRoute, expect

SCAN = "top_gainers"
COLUMNS = ["symbol", "price", "change_pct", "volume", "rvol", "from_hod_pct"]
Row = list[Any]


def status(phase: str = "regular") -> dict[str, Any]:
    return {
        "type": "status",
        "asof": "2026-11-24T15:00:00.000Z",
        "session": {"date": "2026-11-24", "phase": phase},
        "feed": {"name": "sim", "state": "live", "lag_ms": 1.5},
        "scans": {"cycles": 10, "last_cycle_ms": 2.1},
    }


@dataclass
class ScriptedSocket:
    """Stands in for the server's /ws: answers subscribe and resync with ``rows`` at ``seq``."""

    rows: list[Row]
    seq: int = 1
    sockets: list[WebSocketRoute] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def route(self, ws: WebSocketRoute) -> None:
        self.sockets.append(ws)
        ws.on_message(lambda raw: self._on_message(ws, raw))
        ws.send(json.dumps(status()))

    def _on_message(self, ws: WebSocketRoute, raw: str | bytes) -> None:
        message = json.loads(raw)
        self.received.append(message)
        if message.get("op") == "subscribe":
            for scan in message["scans"]:
                ws.send(json.dumps(self.snapshot(scan)))
        elif message.get("op") == "resync":
            ws.send(json.dumps(self.snapshot(message["scan"])))

    def snapshot(self, scan: str) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "scan": scan,
            "seq": self.seq,
            "asof": "2026-11-24T15:00:01.000Z",
            "columns": COLUMNS,
            "rows": self.rows,
        }

    def delta(
        self,
        upsert: Sequence[Row] = (),
        remove: Sequence[str] = (),
        order: list[str] | None = None,
        prev_seq: int | None = None,
    ) -> None:
        """Send a delta following ``seq`` (or claiming to follow ``prev_seq``)."""
        previous = self.seq if prev_seq is None else prev_seq
        message: dict[str, Any] = {
            "type": "delta",
            "scan": SCAN,
            "seq": previous + 1,
            "prev_seq": previous,
            "asof": f"2026-11-24T15:00:{previous + 1:02d}.000Z",
            "upsert": list(upsert),
            "remove": list(remove),
        }
        if order is not None:
            message["order"] = order
        if prev_seq is None:
            self.seq = previous + 1
        self.send(message)

    def send(self, message: dict[str, Any]) -> None:
        self.sockets[-1].send(json.dumps(message))


def row(symbol: str, price: float, change: float = 5.0) -> Row:
    return [symbol, price, change, 250_000, 2.5, -1.0]


@pytest.fixture
def scripted(page: Page) -> ScriptedSocket:
    socket = ScriptedSocket([row("AAA", 10.0, 9.0), row("BBB", 20.0, 7.0), row("CCC", 5.0, 6.0)])
    page.add_init_script(
        "localStorage.setItem('tapescan.layout.v1', "
        f"JSON.stringify({{panels: [{{scan: '{SCAN}'}}]}}))"
    )
    page.route_web_socket(re.compile(r"/ws$"), socket.route)
    return socket


def symbols(page: Page) -> list[str]:
    tbody = page.get_by_test_id(f"panel-{SCAN}").locator("tbody")
    return list(tbody.locator("tr").evaluate_all("rows => rows.map(r => r.dataset.symbol)"))


def cell(page: Page, symbol: str, column: str) -> Locator:
    return page.get_by_test_id(f"row-{SCAN}-{symbol}").locator(f"[data-col='{column}']")


def expect_symbols(page: Page, wanted: list[str]) -> None:
    tbody = page.get_by_test_id(f"panel-{SCAN}").locator("tbody tr")
    expect(tbody).to_have_count(len(wanted))
    for index, symbol in enumerate(wanted):
        expect(tbody.nth(index)).to_have_attribute("data-symbol", symbol)


def test_snapshot_then_deltas_flash_and_a_gap_asks_for_a_resync(
    page: Page, scripted: ScriptedSocket
) -> None:
    page.goto("/")
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    assert {"op": "subscribe", "scans": [SCAN]} in scripted.received
    expect(cell(page, "AAA", "price")).to_have_text("10.00")
    expect(cell(page, "AAA", "change_pct")).to_have_text("+9.00")
    expect(cell(page, "AAA", "volume")).to_have_text("250.0K")

    scripted.delta(
        upsert=[row("AAA", 10.5, 14.0), row("BBB", 19.5, 7.0), row("DDD", 3.0, 12.0)],
        remove=["CCC"],
        order=["AAA", "DDD", "BBB"],
    )
    expect_symbols(page, ["AAA", "DDD", "BBB"])
    expect(cell(page, "AAA", "price")).to_have_text("10.50")
    expect(cell(page, "AAA", "price")).to_have_class(re.compile(r"\bflash-up\b"))
    expect(cell(page, "AAA", "change_pct")).to_have_class(re.compile(r"\bflash-up\b"))
    expect(cell(page, "BBB", "price")).to_have_class(re.compile(r"\bflash-down\b"))
    expect(cell(page, "BBB", "change_pct")).not_to_have_class(re.compile(r"flash"))
    expect(page.get_by_test_id(f"row-{SCAN}-DDD")).to_have_class(re.compile(r"\brow-enter\b"))

    # a delta that does not follow the seq we hold is not applied: the page asks for a snapshot
    scripted.rows = [row("EEE", 42.0, 20.0), row("AAA", 10.6, 14.2)]
    scripted.seq = 9
    scripted.delta(upsert=[row("ZZZ", 1.0)], order=["ZZZ", "AAA", "DDD", "BBB"], prev_seq=5)
    expect_symbols(page, ["EEE", "AAA"])
    assert {"op": "resync", "scan": SCAN} in scripted.received

    scripted.delta(upsert=[row("AAA", 10.4, 14.0)])  # 9 -> 10, without order: keep the order
    expect(cell(page, "AAA", "price")).to_have_text("10.40")
    expect(cell(page, "AAA", "price")).to_have_class(re.compile(r"\bflash-down\b"))
    expect_symbols(page, ["EEE", "AAA"])


def test_clicking_a_header_sorts_on_the_client(page: Page, scripted: ScriptedSocket) -> None:
    page.goto("/")
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    header = page.get_by_test_id(f"panel-{SCAN}").locator("th[data-col='price']")
    page.get_by_test_id(f"sort-{SCAN}-price").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect_symbols(page, ["BBB", "AAA", "CCC"])
    page.get_by_test_id(f"sort-{SCAN}-price").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    expect_symbols(page, ["CCC", "AAA", "BBB"])
    scripted.delta(upsert=[row("CCC", 30.0, 6.0)])  # the sort holds as values change
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    page.get_by_test_id(f"sort-{SCAN}-price").click()  # third click: the scan's own rank
    expect(header).not_to_have_attribute("aria-sort", re.compile(".*"))
    expect_symbols(page, ["AAA", "BBB", "CCC"])


ALERT_STUBS = """
window.__alerts = {notifications: [], oscillators: 0};
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__alerts.notifications.push({title, body: options.body}); }
};
window.AudioContext = class {
  state = "running"; currentTime = 0; destination = {};
  resume() { return Promise.resolve(); }
  createOscillator() {
    window.__alerts.oscillators += 1;
    return {frequency: {}, connect: (n) => n, start() {}, stop() {}};
  }
  createGain() {
    return {gain: {setValueAtTime() {}, exponentialRampToValueAtTime() {}}, connect: (n) => n};
  }
};
"""


def test_alerts_beep_and_notify_when_a_symbol_enters_with_a_cooldown(
    page: Page, scripted: ScriptedSocket
) -> None:
    page.add_init_script(ALERT_STUBS)
    page.goto("/")
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    toggle = page.get_by_test_id(f"alert-toggle-{SCAN}")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")

    scripted.delta(upsert=[row("DDD", 3.0, 12.0)], order=["DDD", "AAA", "BBB", "CCC"])
    expect(page.get_by_test_id("toast").first).to_contain_text("DDD 3.00 entered Top gainers")
    page.wait_for_function("window.__alerts.notifications.length === 1")
    assert page.evaluate("window.__alerts.oscillators") >= 1

    # DDD leaves and comes back within the cooldown: only EEE is announced
    scripted.delta(remove=["DDD"], order=["AAA", "BBB", "CCC"])
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    scripted.delta(
        upsert=[row("DDD", 3.1, 12.5), row("EEE", 8.0, 11.0)],
        order=["DDD", "EEE", "AAA", "BBB", "CCC"],
    )
    page.wait_for_function("window.__alerts.notifications.length === 2")
    body = page.evaluate("window.__alerts.notifications[1].body")
    assert "EEE" in body
    assert "DDD" not in body

    # alerts off: nothing more
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    scripted.delta(upsert=[row("FFF", 2.0, 10.0)])
    expect(page.get_by_test_id(f"row-{SCAN}-FFF")).to_be_visible()
    assert page.evaluate("window.__alerts.notifications.length") == 2


def test_stale_data_is_flagged_and_a_dropped_socket_reconnects(
    page: Page, scripted: ScriptedSocket
) -> None:
    page.goto("/")
    expect_symbols(page, ["AAA", "BBB", "CCC"])
    warning = page.get_by_test_id("stale-warning")
    expect(warning).to_be_hidden()
    # no status and no delta for more than 5 s
    expect(warning).to_be_visible(timeout=8_000)
    expect(warning).to_contain_text("No updates")
    scripted.send(status())
    expect(warning).to_be_hidden()

    scripted.sockets[-1].close()
    expect(warning).to_be_visible()
    expect(warning).to_have_attribute("data-kind", "down")
    expect(warning).to_contain_text("Disconnected")
    # the page reconnects by itself (backoff starts near 0.5 s) and subscribes again
    expect(warning).to_be_hidden(timeout=5_000)
    assert len(scripted.sockets) == 2
    assert scripted.received.count({"op": "subscribe", "scans": [SCAN]}) == 2
    expect_symbols(page, ["AAA", "BBB", "CCC"])
