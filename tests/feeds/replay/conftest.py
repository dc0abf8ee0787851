from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tapescan.feeds.replay import ReplayFiles
from tapescan.feeds.sim.dataset import FileFormat, write_dataset
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tests.feeds.replay.helpers import DAY, PREVIOUS_DAY

SEED = 23
SYMBOLS = 60


@dataclass(frozen=True)
class SimulatedFiles:
    market: SimMarket
    parquet: ReplayFiles
    csv: ReplayFiles

    def files(self, file_format: str) -> ReplayFiles:
        return self.parquet if file_format == "parquet" else self.csv


def _written(market: SimMarket, directory: Path, file_format: FileFormat) -> ReplayFiles:
    paths = write_dataset(market, directory, [PREVIOUS_DAY, DAY], file_format)
    return ReplayFiles(paths.minute_bars, paths.daily_bars, paths.reference)


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> SimulatedFiles:
    """Two simulated sessions, either side of a clock change, written in both formats."""
    market = SimMarket(SEED, SYMBOLS, market_calendar())
    return SimulatedFiles(
        market=market,
        parquet=_written(market, tmp_path_factory.mktemp("parquet"), FileFormat.PARQUET),
        csv=_written(market, tmp_path_factory.mktemp("csv"), FileFormat.CSV),
    )
