"""Immutable events every feed emits, and the symbol universe they index into.

Aggregates travel as columnar batches (one numpy array per field) so that a whole second of
the market is applied to state with vectorized code. Every event carries two integer-nanosecond
timestamps: when it happened (``ts_event_ns``) and when this process saw it (``ts_init_ns``).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND


class AggregateKind(enum.IntEnum):
    """Window length of an aggregate, in seconds."""

    SECOND = 1
    MINUTE = 60


class FeedState(enum.Enum):
    STARTING = "starting"
    LIVE = "live"
    REPLAYING = "replaying"
    ENDED = "ended"
    FAILED = "failed"


class Universe:
    """The fixed, ordered list of symbols a process watches; rows of state follow its order."""

    __slots__ = ("_index", "symbols")

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        if len(self._index) != len(self.symbols):
            raise ValueError("universe symbols must be unique")

    def __len__(self) -> int:
        return len(self.symbols)

    def index_of(self, symbol: str) -> int:
        """Row of ``symbol``, or -1 when it is not in the universe."""
        return self._index.get(symbol, -1)

    def indices_of(self, symbols: Iterable[str]) -> Int32Array:
        get = self._index.get
        return np.fromiter((get(s, -1) for s in symbols), dtype=np.int32)

    @property
    def mapping(self) -> Mapping[str, int]:
        return self._index


def _frozen(array: npt.NDArray[np.generic]) -> None:
    array.flags.writeable = False


@dataclass(frozen=True, slots=True, eq=False)
class AggregateBatch:
    """OHLCV aggregates of one window length, one row per (symbol, window)."""

    kind: AggregateKind
    symbol_index: Int32Array
    start_ns: Int64Array
    open: Float64Array
    high: Float64Array
    low: Float64Array
    close: Float64Array
    volume: Int64Array
    vwap: Float64Array
    trades: Int32Array
    ts_init_ns: int = 0
    ts_event_ns: int = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.symbol_index)
        for name in ("start_ns", "open", "high", "low", "close", "volume", "vwap", "trades"):
            if len(getattr(self, name)) != n:
                rows = len(getattr(self, name))
                raise ValueError(f"AggregateBatch column {name} has {rows} rows, expected {n}")
        for name in (
            "symbol_index",
            "start_ns",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "vwap",
            "trades",
        ):
            _frozen(getattr(self, name))
        window_ns = int(self.kind) * NS_PER_SECOND
        end = int(self.start_ns.max()) + window_ns if n else 0
        object.__setattr__(self, "ts_event_ns", end)

    def __len__(self) -> int:
        return len(self.symbol_index)

    @property
    def end_ns(self) -> Int64Array:
        return self.start_ns + int(self.kind) * NS_PER_SECOND

    def take(self, index: npt.NDArray[np.integer[Any]]) -> AggregateBatch:
        """The rows at ``index`` (positions), in that order, as a batch of the same kind."""
        return AggregateBatch(
            kind=self.kind,
            symbol_index=self.symbol_index[index],
            start_ns=self.start_ns[index],
            open=self.open[index],
            high=self.high[index],
            low=self.low[index],
            close=self.close[index],
            volume=self.volume[index],
            vwap=self.vwap[index],
            trades=self.trades[index],
            ts_init_ns=self.ts_init_ns,
        )


@dataclass(frozen=True, slots=True)
class HaltEvent:
    """A trading pause (LULD or regulatory) starting (``halted``) or ending for one symbol."""

    symbol_index: int
    halted: bool
    reason: str
    ts_event_ns: int
    ts_init_ns: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class BandBatch:
    """Limit Up-Limit Down price bands published at ``ts_event_ns`` for some symbols: trades
    outside ``[lower, upper]`` are not allowed while the regular session is open."""

    symbol_index: Int32Array
    upper: Float64Array
    lower: Float64Array
    ts_event_ns: int
    ts_init_ns: int = 0

    def __post_init__(self) -> None:
        n = len(self.symbol_index)
        for name in ("upper", "lower"):
            if len(getattr(self, name)) != n:
                rows = len(getattr(self, name))
                raise ValueError(f"BandBatch column {name} has {rows} rows, expected {n}")
        for name in ("symbol_index", "upper", "lower"):
            _frozen(getattr(self, name))

    def __len__(self) -> int:
        return len(self.symbol_index)


@dataclass(frozen=True, slots=True)
class FeedStatus:
    state: FeedState
    message: str
    ts_event_ns: int
    ts_init_ns: int = 0
    progress: tuple[int, int] | None = None  # (done, total) of a step of the catch-up


FeedEvent = AggregateBatch | HaltEvent | BandBatch | FeedStatus


def stamped(batch: AggregateBatch, ts_init_ns: int | None = None) -> AggregateBatch:
    """The batch as seen by this process at ``ts_init_ns`` (now by default)."""
    return dataclasses.replace(
        batch, ts_init_ns=time.time_ns() if ts_init_ns is None else ts_init_ns
    )
