"""Ticker details and free floats: what each answer gives, whatever its fields hold."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import pyarrow as pa
import pytest

from tapescan.feeds.massive import details
from tapescan.feeds.massive.client import MassiveFatalError
from tapescan.feeds.massive.details import details_row, free_floats, ticker_details, with_floats
from tapescan.feeds.massive.fake_market import FakeMarket
from tapescan.feeds.massive.fake_rest import RestFaults, rest_app
from tapescan.feeds.massive.rest import MassiveRest, MassiveRestError, RestInterruptedError
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.market.clock import FastClock
from tapescan.model import Universe


def test_market_cap_shares_and_sector_are_read_and_float_is_never_guessed() -> None:
    row = details_row(
        {
            "status": "OK",
            "results": {
                "ticker": "AAPL",
                "name": "Apple Inc.",
                "primary_exchange": "XNAS",
                "market_cap": 2771126040150,
                "share_class_shares_outstanding": 16406400000,
                "weighted_shares_outstanding": 16334371000,
                "sic_description": "ELECTRONIC COMPUTERS",
            },
        }
    )
    assert row == {
        "name": "Apple Inc.",
        "exchange": "XNAS",
        "sector": "ELECTRONIC COMPUTERS",
        "float_shares": None,
        "shares_outstanding": 16406400000.0,
        "market_cap": 2771126040150.0,
    }


def test_missing_or_wrong_fields_are_null() -> None:
    assert details_row({}) == dict.fromkeys(
        ("name", "exchange", "sector", "float_shares", "shares_outstanding", "market_cap")
    )
    row = details_row(
        {
            "results": {
                "name": "  ",
                "market_cap": "big",
                "share_class_shares_outstanding": -5,
                "weighted_shares_outstanding": 1e9,  # the class's count missing: all classes
                "sic_description": 7,
            }
        }
    )
    assert row["name"] is None
    assert row["market_cap"] is None
    assert row["shares_outstanding"] == 1e9
    assert row["sector"] is None
    assert details_row({"results": [1, 2]})["market_cap"] is None
    assert details_row({"results": {"market_cap": float("nan")}})["market_cap"] is None
    assert details_row({"results": {"market_cap": True}})["market_cap"] is None


class Rest:
    """Ticker details as a REST client would get them; some tickers fail."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.asked: list[str] = []

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        ticker = path.rsplit("/", 1)[-1]
        self.asked.append(ticker)
        if ticker in self.failing or "*" in self.failing:
            raise MassiveRestError(f"/v3/reference/tickers/{{ticker}}: HTTP 404: {ticker}")
        return {"status": "OK", "results": {"market_cap": 1e9, "sic_description": "X"}}


LISTING = pa.table(
    {
        "symbol": ["AAA", "BBB", "CCC"],
        "name": ["A Inc", "B Inc", "C Inc"],
        "exchange": ["XNAS", "XNYS", "XNAS"],
    }
)
DAY = dt.date(2026, 11, 24)


def details_of(rest: Rest) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:
        table = ticker_details(
            cast(MassiveRest, rest), pool, Universe(["AAA", "BBB", "CCC"]), LISTING, DAY, 2
        )
    return sorted(table.to_pylist(), key=lambda row: row["symbol"])


def test_a_failed_ticker_keeps_its_listing_and_is_not_marked_taken() -> None:
    rows = details_of(Rest({"BBB"}))
    assert [(r["symbol"], r["market_cap"], r["updated"]) for r in rows] == [
        ("AAA", 1e9, DAY),
        ("BBB", None, None),  # asked again at the next start
        ("CCC", 1e9, DAY),
    ]
    assert rows[1]["name"] == "B Inc"
    assert rows[1]["exchange"] == "XNYS"


def test_failures_in_a_row_stop_the_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(details, "FAILURES_IN_A_ROW_MAX", 2)
    symbols = [f"S{i:03d}" for i in range(40)]
    listing = pa.table({"symbol": symbols, "name": symbols, "exchange": ["XNAS"] * 40})
    rest = Rest({"*"})
    with ThreadPoolExecutor(1) as pool:
        table = ticker_details(cast(MassiveRest, rest), pool, Universe(symbols), listing, DAY, 1)
    assert len(rest.asked) <= 2 + 4  # the two that failed and those queued behind them
    assert table.num_rows == 40  # every ticker, with its listing
    assert table.column("updated").null_count == 40
    assert table.column("name").to_pylist() == symbols


class FloatListing:
    """The float listing in pages, as ``MassiveRest.pages`` hands them out; or refused."""

    def __init__(self, pages: list[dict[str, Any]], error: Exception | None = None) -> None:
        self._pages = pages
        self._error = error
        self.asked: list[tuple[str, dict[str, str] | None]] = []

    def pages(self, path: str, params: dict[str, str] | None = None) -> Any:
        self.asked.append((path, params))
        if self._error is not None:
            raise self._error
        yield from self._pages


def test_floats_come_from_every_page_of_the_listing_and_bad_entries_are_left_out() -> None:
    listing = FloatListing(
        [
            {"results": [{"ticker": "AAA", "free_float": 15_000_000}, {"ticker": "BBB"}]},
            {"results": [{"ticker": "CCC", "free_float": -3}, "junk", {"free_float": 5}]},
            {"results": [{"ticker": "DDD", "free_float": 2.5e6, "free_float_percent": 40.0}]},
            {"status": "OK"},
        ]
    )
    rows = ticker_details_with_floats(listing)
    assert listing.asked == [("/stocks/vX/float", {"limit": "5000", "sort": "ticker.asc"})]
    assert free_floats(cast(MassiveRest, listing)) == {"AAA": 15e6, "DDD": 2.5e6}
    assert [(r["symbol"], r["float_shares"]) for r in rows] == [
        ("AAA", 15e6),
        ("BBB", None),
        ("CCC", None),
    ]
    assert rows[0]["market_cap"] == 1e9  # the rest of the details kept


def test_a_stop_during_the_float_listing_ends_the_warm_up() -> None:
    with pytest.raises(RestInterruptedError):
        ticker_details_with_floats(FloatListing([], RestInterruptedError("stopped")))


@pytest.mark.parametrize(
    "error",
    [
        MassiveFatalError("Massive refused the key for /stocks/vX/float (403: not entitled)"),
        MassiveRestError("/stocks/vX/float: HTTP 404: not found"),
    ],
)
def test_a_plan_without_floats_keeps_the_other_details(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    rows = ticker_details_with_floats(FloatListing([], error))
    assert [r["float_shares"] for r in rows] == [None, None, None]
    assert [r["market_cap"] for r in rows] == [1e9, 1e9, 1e9]
    assert "float_shares stays null" in caplog.text


def ticker_details_with_floats(listing: FloatListing) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:
        table = ticker_details(
            cast(MassiveRest, Rest(set())), pool, Universe(["AAA", "BBB", "CCC"]), LISTING, DAY, 2
        )
    return sorted(
        with_floats(cast(MassiveRest, listing), table).to_pylist(), key=lambda r: r["symbol"]
    )


@pytest.mark.parametrize("plan_has_floats", [True, False])
async def test_the_fake_lists_floats_in_pages_or_refuses_them(plan_has_floats: bool) -> None:
    calendar = market_calendar()
    market = FakeMarket.simulated(SimMarket(7, 30, calendar), DAY)
    faults = RestFaults(no_float_plan=not plan_has_floats)
    app = rest_app(market, "k", FastClock(calendar.session(DAY).regular_open_ns), faults)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers={"Authorization": "Bearer k"}
    ) as http:
        first = await http.get("/stocks/vX/float", params={"limit": "20"})
        if not plan_has_floats:
            assert first.status_code == 403
            assert first.json()["status"] == "NOT_AUTHORIZED"
            return
        assert first.status_code == 200
        second = await http.get(first.json()["next_url"])
    assert "next_url" not in second.json()
    got = {r["ticker"]: r["free_float"] for r in first.json()["results"] + second.json()["results"]}
    reference = market.source.reference_table()
    assert got == dict(
        zip(
            reference.column("symbol").to_pylist(),
            reference.column("float_shares").to_pylist(),
            strict=True,
        )
    )
