"""Ticker details: what each answer gives, whatever its fields hold."""

from __future__ import annotations

from tapescan.feeds.massive.details import details_row


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
