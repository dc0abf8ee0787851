"""`tapescan run --feed massive` against `tapescan fake-massive`, both real processes on 127.0.0.1.

The fake serves 300 simulated symbols from 10:00 ET; the run takes its universe and 40 sessions
of daily bars from the fake's REST API and its live bars from the fake's socket.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from playwright.sync_api import expect, sync_playwright

from tapescan.feeds.massive.client import MassiveFatalError
from tapescan.feeds.massive.feed import MassiveConfig, MassiveFeed, grouped_daily, list_tickers
from tapescan.feeds.massive.rest import MassiveRest, MassiveRestError
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.model import Universe
from tests.api.server import Server
from tests.feeds.massive.fake_process import KEY, FakeProcess
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium

pytestmark = pytest.mark.slow
SESSION = dt.date(2026, 11, 24)  # the fake's session (tests/feeds/massive/fake_process.py)
EVENING = "2026-11-25T02:00:00+00:00"  # 21:00 ET on the fake's session


def run_massive(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`tapescan run --feed massive` to its end, in an environment of ``env`` only."""
    return subprocess.run(
        [sys.executable, "-m", "tapescan", "run", "--feed", "massive", "--port", "0"],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recorded_bars(url: str, symbol: str, timeout_s: float = 30.0) -> list[dict[str, object]]:
    """Today's minute bars of ``symbol`` in the store, once the recorder has written some."""
    deadline = time.monotonic() + timeout_s
    while True:
        bars: list[dict[str, object]] = httpx.get(f"{url}/api/v1/symbols/{symbol}/bars").json()[
            "bars"
        ]
        if bars or time.monotonic() > deadline:
            return bars
        time.sleep(0.2)  # the recorder writes every second or so; nothing here to await


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    process = FakeProcess(tmp_path_factory.mktemp("fake"))
    yield process
    process.stop()


def test_a_run_takes_universe_and_history_from_rest_and_bars_from_the_socket(
    fake: FakeProcess, tmp_path: Path
) -> None:
    server = Server(tmp_path, "--feed", "massive", "--start", fake.now(), env=fake.env())
    try:
        health = server.health(lambda h: h["scans"]["warmed_up"] and h["scans"]["cycles"] >= 2)
        assert health["feed"]["name"] == "massive"
        assert health["feed"]["state"] == "live"
        server.health(lambda h: h["feed"]["aggregates"] > 0)
        with MassiveRest(KEY, fake.rest_url) as rest:
            tickers = [row[0] for row in list_tickers(rest, ["CS"])]
            universe = Universe(tickers)
            yesterday = grouped_daily(rest, dt.date(2026, 11, 23), universe)
        assert len(tickers) == 300
        closes = dict(
            zip(
                yesterday.column("symbol").to_pylist(),
                yesterday.column("close").to_pylist(),
                strict=True,
            )
        )
        assert len(closes) >= 250  # the symbols that traded on the 23rd
        for symbol in sorted(closes)[:20]:
            values = httpx.get(f"{server.url}/api/v1/symbols/{symbol}").json()["values"]
            assert values["prev_close"] == pytest.approx(closes[symbol])
        connection = health["feed"]["connection"]
        assert connection["socket"]["state"] == "live"
        assert connection["rest"]["by_endpoint"] == {
            "/v3/reference/tickers": 2,  # a page of common stocks, one (empty) of ETFs
            "/v3/reference/tickers/{ticker}": 300,  # each ticker's details, once a day
            "/stocks/vX/float": 1,  # every ticker's float, 5,000 a page
            "/v2/aggs/grouped": 40,
            "/v2/aggs/ticker": 10 * 300 + 300,  # the RVOL baseline, today's bars since 04:00
            "/v2/snapshot": 1,  # which tickers traded since 04:00 (at 10:00 ET, all)
        }
        assert health["store"]["details_source"] == "feed"
        # market cap and sector from the details, the float from the float listing
        reference = SimMarket(7, 300, market_calendar()).reference_table().to_pylist()
        for item in reference[:20]:
            values = httpx.get(f"{server.url}/api/v1/symbols/{item['symbol']}").json()["values"]
            assert values["market_cap"] == item["market_cap"]
            assert values["sector"] == item["sector"]
            assert values["float_shares"] == item["float_shares"]
        backfill = connection["backfill"]
        assert backfill["gaps"] == 1
        assert backfill["requests"] == 300 + 1  # and the snapshot
        assert backfill["quiet"] == 0
        assert backfill["bars"] > 0
        assert backfill["last"]["reason"] == "start"
        assert backfill["last"]["error"] is None
        assert health["store"]["warmup_source"] == "feed"
        assert KEY not in json.dumps(health)
        rvol = [
            httpx.get(f"{server.url}/api/v1/symbols/{s}").json()["values"]["rvol"]
            for s in tickers[:50]
        ]
        assert sum(v is not None for v in rvol) >= 10
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "tapescan_feed_socket_live 1.0" in metrics
        assert "tapescan_feed_rest_requests 3644.0" in metrics
        # today's volume from 04:00 is in: the bars REST brought were recorded to the store
        first = recorded_bars(server.url, tickers[0])[0]
        assert str(first["t"]) < "2026-11-24T15:00"  # before the start: from REST
    finally:
        server.stop()
    again = Server(tmp_path, "--feed", "massive", "--start", fake.now(), env=fake.env())
    try:
        health = again.health(lambda h: h["scans"]["warmed_up"])
        assert health["store"]["warmup_source"] == "store"
        assert health["store"]["details_source"] == "store"  # taken today already
        values = httpx.get(f"{again.url}/api/v1/symbols/{reference[0]['symbol']}").json()
        assert values["values"]["market_cap"] == reference[0]["market_cap"]
        # history from the store; today's bars from the store up to the stop, and from REST
        # only the minutes after the stored ones (none when the restart is in the same minute)
        connection = health["feed"]["connection"]
        by_endpoint, backfill = connection["rest"]["by_endpoint"], connection["backfill"]
        assert set(by_endpoint) <= {"/v3/reference/tickers", "/v2/aggs/ticker", "/v2/snapshot"}
        assert by_endpoint["/v3/reference/tickers"] == 2
        assert by_endpoint.get("/v2/snapshot", 0) == backfill["gaps"]
        assert by_endpoint.get("/v2/aggs/ticker", 0) == 300 * backfill["gaps"] - backfill["quiet"]
        if backfill["gaps"]:
            assert not backfill["last"]["minutes"].startswith("04:00")
        assert health["store"]["recovered_bars"] > 0
    finally:
        again.stop()

    # 21:00 ET: the run warms up for the next session. The store holds the 40 sessions before
    # the 24th; the 24th itself (not recorded to its end) is the one session asked for, not 40,
    # and no bars of a session in progress are.
    evening = FakeProcess(tmp_path, "--start", EVENING)
    try:
        later = Server(tmp_path, "--feed", "massive", "--start", EVENING, env=evening.env())
        try:
            health = later.health(lambda h: h["scans"]["warmed_up"])
            assert health["store"]["warmup_source"] == "store and feed"
            assert health["store"]["warmup_feed_sessions"] == 1
            connection = health["feed"]["connection"]
            assert connection["rest"]["by_endpoint"] == {
                "/v3/reference/tickers": 2,
                "/v3/reference/tickers/{ticker}": 300,  # the next session's details
                "/stocks/vX/float": 1,
                "/v2/aggs/grouped": 1,  # the 24th
                "/v2/aggs/ticker": 300,  # the 24th's slot profiles
            }
            assert connection["backfill"]["gaps"] == 0
            with MassiveRest(KEY, evening.rest_url) as rest:
                day_ended = grouped_daily(rest, SESSION, universe)
            ended = list(
                zip(
                    day_ended.column("symbol").to_pylist(),
                    day_ended.column("close").to_pylist(),
                    strict=True,
                )
            )
            for symbol, close in ended[:20]:
                values = httpx.get(f"{later.url}/api/v1/symbols/{symbol}").json()["values"]
                assert values["prev_close"] == pytest.approx(close)  # the day just ended
                assert values["avg_volume_20d"] is not None
        finally:
            later.stop()
    finally:
        evening.stop()


def test_a_key_the_rest_api_refuses_exits_2_within_5_s_with_one_line(
    fake: FakeProcess, tmp_path: Path
) -> None:
    started = time.monotonic()
    done = run_massive(tmp_path, fake.env(key="wrong-key"))
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert elapsed < 5
    assert "MASSIVE_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr
    assert "wrong-key" not in done.stderr


def test_no_key_says_where_to_set_it(tmp_path: Path) -> None:
    done = run_massive(tmp_path, {})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "MASSIVE_API_KEY" in lines[0]


def test_a_socket_that_refuses_the_key_ends_the_run_with_exit_2(tmp_path: Path) -> None:
    refusing = FakeProcess(tmp_path, "--refuse-key", symbols=50)
    try:
        started = time.monotonic()
        done = run_massive(tmp_path, refusing.env())
        assert done.returncode == 2, done.stderr
        assert time.monotonic() - started < 30  # imports, warm-up from REST, the handshake
        assert "MASSIVE_API_KEY" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        refusing.stop()


def test_rest_client_pages_through_429s_and_html_504s(tmp_path: Path) -> None:
    flaky = FakeProcess(tmp_path, "--rate-limit-every", "3", "--html-504-every", "5", symbols=250)
    pauses: list[float] = []
    try:
        with MassiveRest(KEY, flaky.rest_url, sleep=pauses.append) as rest:
            pages = list(rest.pages("/v3/reference/tickers", {"limit": "40", "type": "CS"}))
            counters = rest.counters
        tickers = [item["ticker"] for page in pages for item in page.get("results", [])]
        assert len(tickers) == len(set(tickers)) == 250
        assert len(pages) == 7
        assert counters.rate_limited >= 2
        assert counters.retries == len(pauses) >= 3
        assert 0.2 in pauses  # the 429's Retry-After
    finally:
        flaky.stop()


def test_rest_client_refused_key_is_fatal_and_unknown_paths_are_errors(fake: FakeProcess) -> None:
    with MassiveRest("not-the-key", fake.rest_url) as rest, pytest.raises(MassiveFatalError):
        rest.get("/v3/reference/tickers")
    with MassiveRest(KEY, fake.rest_url) as rest, pytest.raises(MassiveRestError, match="404"):
        rest.get("/v2/nothing/here")


def test_a_dropped_socket_is_reconnected_and_the_feed_says_live_again(tmp_path: Path) -> None:
    dropping = FakeProcess(tmp_path, "--drop-after", "3", symbols=100)
    server = Server(tmp_path, "--feed", "massive", "--start", dropping.now(), env=dropping.env())
    try:
        health = server.health(
            lambda h: (
                (h["feed"]["connection"] or {}).get("socket", {}).get("reconnects", 0) >= 1
                and h["feed"]["state"] == "live"
                and h["feed"]["message"] == "Massive stocks feed live again"
            ),
            timeout_s=120,
        )
        socket = health["feed"]["connection"]["socket"]
        assert socket["drops"] == {"closed 1006": 1}  # the fake's one drop, no close frame
        require_chromium()
        with sync_playwright() as driver:  # the page's status bar says it too
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(base_url=server.url)
                page.goto("/")
                feed = page.get_by_test_id("feed-state")
                expect(feed).to_have_attribute("data-state", "live", timeout=20_000)
                expect(feed).to_contain_text("massive · live")
                expect(feed).to_have_attribute("title", re.compile(r"Socket: live, 1 reconnect\n"))
                expect(feed).to_have_attribute("title", re.compile("Gaps backfilled from REST"))
            finally:
                browser.close()
    finally:
        server.stop()
        dropping.stop()


def test_ticker_details_come_a_request_per_ticker_unless_the_store_has_them(
    fake: FakeProcess,
) -> None:
    config = MassiveConfig(api_key=KEY, ws_url="ws://127.0.0.1:9/stocks", rest_url=fake.rest_url)
    feed = MassiveFeed.open(config, market_calendar())
    reference = SimMarket(7, 300, market_calendar()).reference_table()
    stored = reference.slice(0, 10)  # taken earlier today, but not for enough tickers
    found = feed.details(SESSION, stored)
    assert found.source == "feed"
    details = found.table
    assert details.num_rows == 300
    assert feed.rest_counters.by_path["/v3/reference/tickers/{ticker}"] == 300
    assert feed.rest_counters.by_path["/stocks/vX/float"] == 1
    ours = {row["symbol"]: row for row in details.to_pylist()}
    for item in reference.to_pylist():
        row = ours[item["symbol"]]
        assert row["market_cap"] == item["market_cap"]
        assert row["shares_outstanding"] == item["shares_outstanding"]
        assert (row["sector"], row["name"]) == (item["sector"], item["name"])
        assert row["float_shares"] == item["float_shares"]
        assert row["updated"] == SESSION
    again = feed.details(SESSION, details)  # complete in the store: no request
    assert again.source == "store"
    assert again.table.equals(details)
    assert feed.rest_counters.by_path["/stocks/vX/float"] == 1
    # taken while the float listing failed: the floats alone are asked again
    at = details.schema.get_field_index("float_shares")
    floatless = details.set_column(
        at, details.schema.field(at), pa.nulls(details.num_rows, pa.float64())
    )
    refilled = feed.details(SESSION, floatless)
    assert refilled.source == "store"
    assert refilled.table.equals(details)
    assert feed.rest_counters.by_path["/stocks/vX/float"] == 2
    assert feed.rest_counters.by_path["/v3/reference/tickers/{ticker}"] == 300
    # a ticker listed since the details were taken: its listing's, no details yet
    partial = feed.details(SESSION, details.slice(1))
    assert partial.table.num_rows == 300
    assert partial.table.column("market_cap")[299].as_py() is None
    assert partial.table.column("symbol")[299].as_py() == details.column("symbol")[0].as_py()
    assert feed.rest_counters.by_path["/v3/reference/tickers/{ticker}"] == 300
    with MassiveRest(KEY, fake.rest_url) as rest, pytest.raises(MassiveRestError, match="404"):
        rest.get("/v3/reference/tickers/NOSUCH")


def test_the_warm_up_from_rest_equals_the_simulators_own(fake: FakeProcess) -> None:
    """Daily bars and the RVOL baseline's slot profiles, session by session, as the simulated
    feed would hand them to state for the same market."""
    calendar = market_calendar()
    config = MassiveConfig(api_key=KEY, ws_url="ws://127.0.0.1:9/stocks", rest_url=fake.rest_url)
    feed = MassiveFeed.open(config, calendar)
    steps: list[tuple[int, int]] = []
    rest = list(feed.warmup(SESSION, lambda done, total: steps.append((done, total))).sessions)
    market = SimMarket(7, 300, calendar)
    sim = list(SimFeed(market).warmup(SESSION).sessions)
    assert [s.date for s in rest] == [s.date for s in sim]
    assert steps[-1] == (40 + 10 * 300, 40 + 10 * 300)
    rows = feed.universe.indices_of(market.universe.symbols)  # the sim's order in the feed's
    with_slots = 0
    for ours, theirs in zip(rest, sim, strict=True):
        assert ours.daily.sort_by("symbol").equals(
            theirs.daily.select(ours.daily.column_names).sort_by("symbol")
        )
        if theirs.slot_volume is None:
            assert ours.slot_volume is None
            continue
        assert ours.slot_volume is not None
        np.testing.assert_array_equal(ours.slot_volume[rows], theirs.slot_volume)
        with_slots += 1
    assert with_slots == 10
    assert feed.rest_counters.by_path["/v2/aggs/ticker"] == 10 * 300


def test_a_restart_after_a_stop_during_todays_backfill_takes_every_ticker_from_0400(
    tmp_path: Path,
) -> None:
    """Today's bars come ticker by ticker: stopped part-way, the store holds the early minutes
    of some tickers only, so the restart must not resume from the newest stored bar."""
    slow = FakeProcess(tmp_path, "--slow-today-ms", "100", symbols=300)
    try:
        first = Server(tmp_path, "--feed", "massive", "--start", slow.now(), env=slow.env())
        try:
            first.health(
                lambda h: " of 300 tickers" in str((h["feed"]["connection"] or {}).get("backfill")),
                timeout_s=120,
            )
        finally:
            first.stop()  # a Ctrl-C while today's bars are coming
        again = Server(tmp_path, "--feed", "massive", "--start", slow.now(), env=slow.env())
        try:
            health = again.health(lambda h: h["scans"]["warmed_up"], timeout_s=120)
            backfill = health["feed"]["connection"]["backfill"]
            assert backfill["last"]["reason"] == "start"
            assert backfill["last"]["minutes"].startswith("04:00")  # every ticker again
            with MassiveRest(KEY, slow.rest_url) as rest:
                tickers = sorted(row[0] for row in list_tickers(rest, ["CS"]))
                served = {  # the fake's first minute bar today of the last tickers
                    symbol: rest.get(f"/v2/aggs/ticker/{symbol}/range/1/minute/{SESSION}/{SESSION}")
                    for symbol in tickers[-20:]  # those the stopped run never reached
                }
            early = 0
            for symbol, body in served.items():
                if not body.get("results"):
                    continue
                first_ms = int(body["results"][0]["t"])
                stored = recorded_bars(again.url, symbol)
                assert stored, symbol
                first_stored = dt.datetime.fromisoformat(str(stored[0]["t"]))
                assert int(first_stored.timestamp() * 1000) == first_ms, symbol
                early += first_ms < int(
                    dt.datetime(2026, 11, 24, 14, tzinfo=dt.UTC).timestamp() * 1000
                )
            assert early >= 3  # tickers with bars before 09:00 ET, stored after the restart
        finally:
            again.stop()
    finally:
        slow.stop()


def test_ctrl_c_while_the_rest_api_is_down_in_the_warm_up_ends_the_run_at_once(
    tmp_path: Path,
) -> None:
    """REST gone mid-warm-up: requests retry with waits of up to 30 s; a Ctrl-C ends them."""
    fake = FakeProcess(tmp_path)
    server = Server(tmp_path, "--feed", "massive", "--start", fake.now(), env=fake.env())
    try:
        server.health(lambda h: h["scans"]["warmup_done"] > 100, timeout_s=120)
        fake.stop()  # REST answers nothing now: every request is retried after a wait
        server.health(lambda h: h["feed"]["connection"]["rest"]["retries"] >= 8, timeout_s=60)
        began = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        _, stderr = server.process.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        server.stop()
        fake.stop()
    assert took < 3.0, stderr
    assert server.process.returncode == 0, stderr
    assert "warm-up failed" not in stderr
    assert "Traceback" not in stderr
