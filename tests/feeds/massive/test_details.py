"""Ticker details: what each answer gives, whatever its fields hold."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pyarrow as pa
import pytest

from tapescan.feeds.massive import details
from tapescan.feeds.massive.details import details_row, ticker_details
from tapescan.feeds.massive.rest import MassiveRest, MassiveRestError
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
