"""The simulated symbol universe: tickers, reference data and each symbol's character.

Everything is drawn once from the seed: a log-normal price level ($0.50 to several $1,000),
heavy-tailed daily volume, volatility that rises as price falls, and share counts that give
some symbols a very low float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tapescan.market.ticks import round_to_tick
from tapescan.model import Universe

FloatArray = npt.NDArray[np.float64]

UNIVERSE_STREAM = 0x5EED_0001
MIN_PRICE = 0.50
MAX_PRICE = 3_000.0
LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
TICKER_LENGTHS = np.array([1, 2, 3, 4, 5])
TICKER_LENGTH_WEIGHTS = np.array([0.004, 0.04, 0.34, 0.58, 0.036])
EXCHANGES = np.array(["XNAS", "XNYS", "ARCX", "XASE"])
EXCHANGE_WEIGHTS = np.array([0.56, 0.33, 0.07, 0.04])
SECTORS = np.array(
    [
        "Technology",
        "Health Care",
        "Financials",
        "Consumer Discretionary",
        "Industrials",
        "Communication Services",
        "Consumer Staples",
        "Energy",
        "Materials",
        "Real Estate",
        "Utilities",
    ]
)
NAME_SUFFIXES = np.array(
    ["Inc.", "Corp.", "Holdings", "Therapeutics", "Technologies", "Group", "Energy", "Bancorp"]
)


def _truncated_normal(
    rng: np.random.Generator, mean: FloatArray | float, sd: float, low: float, high: float, n: int
) -> FloatArray:
    means = np.broadcast_to(np.asarray(mean, dtype=np.float64), (n,))
    out = rng.normal(means, sd)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(means[bad], sd)
        bad = (out < low) | (out > high)
    return out


def _tickers(rng: np.random.Generator, n: int) -> list[str]:
    seen: set[str] = set()
    tickers: list[str] = []
    while len(tickers) < n:
        lengths = rng.choice(TICKER_LENGTHS, size=n, p=TICKER_LENGTH_WEIGHTS)
        letters = rng.choice(LETTERS, size=(n, int(TICKER_LENGTHS.max())))
        for length, row in zip(lengths, letters, strict=True):
            ticker = "".join(row[:length])
            if ticker not in seen:
                seen.add(ticker)
                tickers.append(ticker)
                if len(tickers) == n:
                    break
    return tickers


@dataclass(frozen=True, slots=True, eq=False)
class SimUniverse:
    """Static per-symbol parameters of the simulated market (arrays in universe order)."""

    universe: Universe
    base_price: FloatArray
    base_volume: FloatArray
    daily_sigma: FloatArray
    trade_size: FloatArray
    shares_outstanding: FloatArray
    float_shares: FloatArray
    exchange: npt.NDArray[np.str_]
    sector: npt.NDArray[np.str_]
    name: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.universe)

    @classmethod
    def generate(cls, seed: int, symbols: int) -> SimUniverse:
        if symbols <= 0:
            raise ValueError(f"symbols must be positive, got {symbols}")
        rng = np.random.default_rng([seed, UNIVERSE_STREAM])
        tickers = _tickers(rng, symbols)
        log_price = _truncated_normal(
            rng, 1.05, 0.62, np.log10(MIN_PRICE), np.log10(MAX_PRICE), symbols
        )
        price = round_to_tick(10.0**log_price)
        # Cheaper stocks trade more shares; the spread makes volume heavy-tailed.
        log_volume = _truncated_normal(
            rng, 5.35 - 0.3 * (log_price - 1.05), 0.85, 3.3, 8.9, symbols
        )
        volume = 10.0**log_volume
        sigma = np.clip(0.055 * price**-0.22 * rng.lognormal(0.0, 0.25, symbols), 0.008, 0.15)
        trade_size = np.clip(150.0 * (10.0 / price) ** 0.2, 30.0, 2_000.0)
        turnover = np.clip(rng.lognormal(np.log(0.008), 0.9, symbols), 0.0005, 0.5)
        shares = np.round(volume / turnover, -3) + 1_000.0
        float_shares = np.round(shares * rng.uniform(0.25, 0.97, symbols), -3) + 1_000.0
        suffix = rng.choice(NAME_SUFFIXES, size=symbols)
        names = np.array([f"{t.title()} {s}" for t, s in zip(tickers, suffix, strict=True)])
        return cls(
            universe=Universe(tickers),
            base_price=price,
            base_volume=volume,
            daily_sigma=sigma,
            trade_size=trade_size,
            shares_outstanding=shares,
            float_shares=float_shares,
            exchange=rng.choice(EXCHANGES, size=symbols, p=EXCHANGE_WEIGHTS),
            sector=rng.choice(SECTORS, size=symbols),
            name=names,
        )

    def reference_table(self) -> pa.Table:
        """Reference data in the replay format of docs/data-formats.md."""
        return pa.table(
            {
                "symbol": pa.array(self.universe.symbols, pa.string()),
                "name": pa.array(self.name.tolist(), pa.string()),
                "exchange": pa.array(self.exchange.tolist(), pa.string()),
                "float_shares": pa.array(self.float_shares.astype(np.int64)),
                "shares_outstanding": pa.array(self.shares_outstanding.astype(np.int64)),
                "market_cap": pa.array(np.round(self.shares_outstanding * self.base_price, 0)),
                "sector": pa.array(self.sector.tolist(), pa.string()),
            }
        )
