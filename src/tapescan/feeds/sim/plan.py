"""Day plans: what each simulated symbol does on one session, decided before its first minute.

A plan fixes the previous close, the official open (after an overnight gap), the regular close,
the day's expected volume and the day's events: pre-market news, an intraday momentum burst and
its fade, an LULD pause on the wildest bursts, after-hours news. Intraday paths are then drawn
to honour the plan exactly, so daily bars, gaps and closes agree with the minute bars.

Closes chain from session to session starting at ``SIM_EPOCH``; each session draws from its own
random stream, so any session can be planned without simulating the minutes before it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapescan.feeds.sim.universe import SimUniverse
from tapescan.market.calendar import MarketCalendar, NotASessionError
from tapescan.market.ticks import round_to_tick

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SIM_EPOCH = dt.date(2020, 1, 2)
CHAIN_STREAM = 0x5EED_0002
EVENT_STREAM = 0x5EED_0003

NEWS_PROBABILITY = 0.004
POST_NEWS_PROBABILITY = 0.003
BURST_PROBABILITY = 0.03
NEWS_BURST_PROBABILITY = 0.6
MEAN_REVERSION = 0.03
HALT_MINUTES = 5


@dataclass(frozen=True, slots=True, eq=False)
class DayPlan:
    """Per-symbol decisions for one session (arrays in universe order)."""

    session: dt.date
    ordinal: int
    prev_close: FloatArray
    open: FloatArray
    close: FloatArray
    expected_volume: FloatArray
    news: BoolArray
    news_minute: IntArray  # minutes after 04:00 ET when pre-market news breaks
    burst: BoolArray
    burst_log: FloatArray  # log-price move at the burst's peak (signed)
    burst_start: IntArray  # minutes after the regular open
    burst_rise: IntArray
    burst_fade: IntArray
    burst_retain: FloatArray
    halt_start: IntArray  # minutes after the regular open; -1 for no halt
    post_news: BoolArray
    post_news_log: FloatArray
    post_news_minute: IntArray  # minutes after the regular close
    day_high: FloatArray  # regular-session high/low for sessions without minute bars
    day_low: FloatArray

    @property
    def gap_log(self) -> FloatArray:
        return np.asarray(np.log(self.open / self.prev_close), dtype=np.float64)


def _log_uniform(rng: np.random.Generator, low: float, high: float, n: int) -> FloatArray:
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def _signed(rng: np.random.Generator, up_probability: float, n: int) -> FloatArray:
    return np.where(rng.random(n) < up_probability, 1.0, -1.0)


WALK_TICK = 50  # sessions of the chain walked between two ticks (~30 ms)


class DailyChain:
    """Opens and closes of every session since ``SIM_EPOCH``, for one universe and seed."""

    def __init__(self, universe: SimUniverse, seed: int, calendar: MarketCalendar) -> None:
        self._universe = universe
        self._seed = seed
        self._calendar = calendar
        self._log_base = np.log(universe.base_price)
        self._sessions: list[dt.date] = []
        self._closes: dict[int, FloatArray] = {}  # ordinal -> close, only for cached ordinals
        self._last_ordinal = -1
        self._last_close = universe.base_price.copy()

    def sessions_through(self, day: dt.date) -> list[dt.date]:
        if day < SIM_EPOCH:
            raise NotASessionError(
                f"the simulator's history starts on {SIM_EPOCH.isoformat()}; "
                f"{day.isoformat()} is before it"
            )
        if not self._sessions or self._sessions[-1] < day:
            self._sessions = self._calendar.sessions_in_range(SIM_EPOCH, max(day, SIM_EPOCH))
        return [s for s in self._sessions if s <= day]

    def ordinal(self, session: dt.date) -> int:
        sessions = self.sessions_through(session)
        if not sessions or sessions[-1] != session:
            raise NotASessionError(f"{session.isoformat()} is not an XNYS trading session")
        return len(sessions) - 1

    def _open_close(self, ordinal: int, prev_close: FloatArray) -> tuple[FloatArray, FloatArray]:
        u = self._universe
        n = len(u)
        rng = np.random.default_rng([self._seed, ordinal, CHAIN_STREAM])
        news = rng.random(n) < NEWS_PROBABILITY
        ordinary_gap = rng.normal(0.0, 0.28 * u.daily_sigma)
        up = rng.random(n) < 0.72
        news_size = _log_uniform(rng, 0.10, 1.30, n)
        news_gap = np.where(up, np.log1p(news_size), np.log1p(-np.minimum(news_size, 0.65)))
        gap = np.where(news, news_gap, ordinary_gap)
        open_ = round_to_tick(prev_close * np.exp(gap))
        revert = -MEAN_REVERSION * (np.log(open_) - self._log_base)
        ordinary_return = rng.normal(revert, 0.75 * u.daily_sigma)
        news_return = rng.normal(-0.2 * gap, 2.0 * u.daily_sigma)
        close = round_to_tick(open_ * np.exp(np.where(news, news_return, ordinary_return)))
        return open_, close

    def close_before(self, ordinal: int, tick: Callable[[], None] | None = None) -> FloatArray:
        """The regular close of the session before ``ordinal`` (base price before the epoch).

        The first call walks the chain from the epoch (~3,000 sessions, ~2 s at 11,882 symbols);
        ``tick`` is called every ``WALK_TICK`` sessions of it (where a stop request is noticed).
        """
        if ordinal == 0:
            return self._universe.base_price.copy()
        target = ordinal - 1
        if target in self._closes:
            return self._closes[target]
        if target < self._last_ordinal:
            self._last_ordinal = -1
            self._last_close = self._universe.base_price.copy()
        close = self._last_close
        for k in range(self._last_ordinal + 1, target + 1):
            _, close = self._open_close(k, close)
            if tick is not None and k % WALK_TICK == 0:
                tick()
        self._last_ordinal, self._last_close = target, close
        self._remember(target, close)
        return close

    def _remember(self, ordinal: int, close: FloatArray) -> None:
        # Bounded: a process plans a window of ~50 sessions at a time (12k symbols x 8 B each).
        if len(self._closes) >= 64:
            self._closes.pop(min(self._closes))
        self._closes[ordinal] = close

    def plan(self, session: dt.date) -> DayPlan:
        ordinal = self.ordinal(session)
        prev_close = self.close_before(ordinal)
        open_, close = self._open_close(ordinal, prev_close)
        self._remember(ordinal, close)
        if self._last_ordinal == ordinal - 1:
            self._last_ordinal, self._last_close = ordinal, close
        return self._events(session, ordinal, prev_close, open_, close)

    def _events(
        self,
        session: dt.date,
        ordinal: int,
        prev_close: FloatArray,
        open_: FloatArray,
        close: FloatArray,
    ) -> DayPlan:
        u = self._universe
        n = len(u)
        times = self._calendar.session(session)
        regular = times.regular_minutes
        premarket = times.premarket_minutes
        post = times.extended_minutes - premarket - regular
        chain = np.random.default_rng([self._seed, ordinal, CHAIN_STREAM])
        news = chain.random(n) < NEWS_PROBABILITY  # same first draw as _open_close
        rng = np.random.default_rng([self._seed, ordinal, EVENT_STREAM])

        multiplier = rng.lognormal(0.0, 0.35, n) * np.where(news, _log_uniform(rng, 6, 40, n), 1.0)
        news_minute = rng.integers(0, premarket - 30, n)

        burst = rng.random(n) < np.where(news, NEWS_BURST_PROBABILITY, BURST_PROBABILITY)
        size = _log_uniform(rng, 0.015, 0.10, n) * np.where(news, 3.0, 1.0)
        burst_log = _signed(rng, 0.7, n) * np.minimum(size, 0.7)
        latest_start = max(regular - 60, 1)
        burst_start = np.floor(latest_start * rng.random(n) ** 1.6).astype(np.int64)
        # News bursts are sharp (2-8 minutes to the peak); ordinary ones build over 3-20.
        burst_rise = np.where(news, rng.integers(2, 9, n), rng.integers(3, 21, n))
        burst_fade = rng.integers(15, 91, n)
        burst_retain = rng.uniform(0.2, 0.7, n)
        # LULD: a move past the band (10% at $3 and up, 20% below) within 5 minutes pauses
        # trading for 5 minutes; a burst's rise is steady, so its 5-minute move is pro rata.
        band = np.where(open_ >= 3.0, 0.10, 0.20)
        peak = burst_start + burst_rise
        five_minute_move = np.abs(np.expm1(burst_log)) * np.minimum(1.0, 5.0 / burst_rise)
        halts = burst & (five_minute_move >= band) & (peak + HALT_MINUTES < regular - 1)
        halt_start = np.where(halts, peak, -1)

        post_news = rng.random(n) < POST_NEWS_PROBABILITY
        post_news_log = _signed(rng, 0.6, n) * _log_uniform(rng, 0.04, 0.30, n)
        post_news_minute = rng.integers(5, min(60, post - 1), n)

        wiggle = np.abs(rng.normal(0.0, 0.5 * u.daily_sigma, (2, n)))
        peak_up = np.where(burst & (burst_log > 0), burst_log, 0.0)
        peak_down = np.where(burst & (burst_log < 0), -burst_log, 0.0)
        day_high = round_to_tick(np.maximum(open_, close) * np.exp(wiggle[0] + peak_up))
        day_low = round_to_tick(np.minimum(open_, close) * np.exp(-wiggle[1] - peak_down))
        return DayPlan(
            session=session,
            ordinal=ordinal,
            prev_close=prev_close,
            open=open_,
            close=close,
            expected_volume=u.base_volume * multiplier,
            news=news,
            news_minute=news_minute,
            burst=burst,
            burst_log=burst_log,
            burst_start=burst_start,
            burst_rise=burst_rise,
            burst_fade=burst_fade,
            burst_retain=burst_retain,
            halt_start=halt_start,
            post_news=post_news,
            post_news_log=post_news_log,
            post_news_minute=post_news_minute,
            day_high=day_high,
            day_low=day_low,
        )
