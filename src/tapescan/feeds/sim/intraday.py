"""Minute-by-minute paths that honour a day plan, drawn 30 minutes at a time.

The log price is a deterministic profile (gap, news jump, burst and fade, after-hours news)
plus Brownian noise pinned to zero at 04:00, at the regular open and at the regular close. The
noise is drawn hierarchically: first its value at every 30-minute boundary, then a bridge
between two boundaries. Each chunk therefore needs only its own random stream, so the live
feed and the file writer produce the same minutes while holding 30 minutes in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapescan.feeds.sim.plan import HALT_MINUTES, DayPlan
from tapescan.feeds.sim.universe import SimUniverse
from tapescan.market.calendar import SessionTimes
from tapescan.market.ticks import round_to_tick

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CHUNK_MINUTES = 30
SKELETON_STREAM = 0x5EED_0004
MINUTE_STREAM = 0x5EED_0005

PRE_VOLATILITY = 0.55
POST_VOLATILITY = 0.45
REGULAR_VOLATILITY = np.array([2.0, 1.3, 1.1, 1.0, 0.9, 0.85, 0.8, 0.8, 0.85, 0.9, 1.0, 1.1, 1.4])
REGULAR_VOLUME = np.array([2.4, 1.5, 1.15, 1.0, 0.85, 0.75, 0.7, 0.72, 0.8, 0.9, 1.05, 1.3, 2.2])
PRE_VOLUME = np.array([0.3, 0.3, 0.4, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.2])
POST_VOLUME = np.array([2.5, 1.5, 1.0, 0.8, 0.6, 0.5, 0.4, 0.4])
PRE_SHARE, NEWS_PRE_SHARE = 0.025, 0.30
POST_SHARE, NEWS_POST_SHARE = 0.015, 0.22
OPEN_MINUTE_FACTOR, CLOSE_MINUTE_FACTOR = 4.0, 6.0
BURST_RISE_VOLUME, BURST_FADE_VOLUME = 6.0, 2.5
MINUTES_PER_REGULAR_DAY = 390.0


def _resample(profile: FloatArray, count: int) -> FloatArray:
    """A profile stretched or squeezed to ``count`` chunks (early closes have fewer)."""
    if count == len(profile):
        return profile
    return np.interp(np.linspace(0, 1, count), np.linspace(0, 1, len(profile)), profile)


@dataclass(frozen=True, slots=True, eq=False)
class MinuteChunk:
    """Up to 30 consecutive minutes for every symbol; arrays are (symbols, minutes)."""

    first_minute: int  # minutes after 04:00 ET
    start_ns: IntArray  # (minutes,) bar start instants
    active: BoolArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    vwap: FloatArray
    volume: IntArray
    trades: IntArray


class DayPath:
    """Draws one session's minutes for every symbol, chunk by chunk."""

    def __init__(
        self, plan: DayPlan, universe: SimUniverse, times: SessionTimes, seed: int
    ) -> None:
        self.plan = plan
        self.times = times
        self._seed = seed
        self._universe = universe
        n = len(universe)
        self.pre_minutes = times.premarket_minutes
        self.regular_minutes = times.regular_minutes
        self.total_minutes = times.extended_minutes
        self.chunks = self.total_minutes // CHUNK_MINUTES
        pre_chunks = self.pre_minutes // CHUNK_MINUTES
        regular_chunks = self.regular_minutes // CHUNK_MINUTES
        post_chunks = self.chunks - pre_chunks - regular_chunks
        self._phase_chunks = (pre_chunks, regular_chunks, post_chunks)

        base_sigma = universe.daily_sigma / np.sqrt(MINUTES_PER_REGULAR_DAY)
        pre_factor = np.where(plan.news, 2.5, 1.0) * PRE_VOLATILITY
        post_factor = np.where(plan.post_news, 2.0, 1.0) * POST_VOLATILITY
        regular_profile = _resample(REGULAR_VOLATILITY, regular_chunks)
        sigma = np.empty((n, self.chunks))
        sigma[:, :pre_chunks] = (base_sigma * pre_factor)[:, None]
        sigma[:, pre_chunks : pre_chunks + regular_chunks] = (
            base_sigma[:, None] * regular_profile[None, :]
        )
        sigma[:, pre_chunks + regular_chunks :] = (base_sigma * post_factor)[:, None]
        self.skeleton = self._skeleton(sigma)
        del sigma  # a chunk's column is made again from these (2.9 MB less for a whole day)
        self._sigma_parts = (base_sigma * pre_factor, base_sigma, regular_profile)
        self._post_sigma = base_sigma * post_factor

        pre_share = np.where(plan.news, NEWS_PRE_SHARE, PRE_SHARE)
        post_share = np.where(plan.post_news, NEWS_POST_SHARE, POST_SHARE)
        # per phase: each symbol's share of the day's volume and each chunk's part of the phase
        self._shares = (pre_share, 1 - pre_share - post_share, post_share)
        self._parts = (
            PRE_VOLUME[:pre_chunks] / PRE_VOLUME[:pre_chunks].sum(),
            _resample(REGULAR_VOLUME, regular_chunks)
            / _resample(REGULAR_VOLUME, regular_chunks).sum(),
            _resample(POST_VOLUME, post_chunks) / _resample(POST_VOLUME, post_chunks).sum(),
        )

    def _phase_of(self, index: int) -> tuple[int, int]:
        """(phase 0/1/2 for pre/regular/post, the chunk's position in its phase)."""
        pre, regular, _ = self._phase_chunks
        if index < pre:
            return 0, index
        if index < pre + regular:
            return 1, index - pre
        return 2, index - pre - regular

    def _sigma(self, index: int) -> FloatArray:
        """The chunk's per-minute volatility, (symbols, 1)."""
        phase, k = self._phase_of(index)
        pre_sigma, base_sigma, regular_profile = self._sigma_parts
        column: FloatArray = self._post_sigma
        if phase == 0:
            column = pre_sigma
        elif phase == 1:
            column = base_sigma * regular_profile[k]
        return column[:, None]

    def _minute_volume(self, index: int) -> FloatArray:
        """The chunk's expected volume a minute, (symbols, 1)."""
        phase, k = self._phase_of(index)
        weight = self._shares[phase] * self._parts[phase][k]
        column: FloatArray = self.plan.expected_volume * weight / CHUNK_MINUTES
        return column[:, None]

    def _skeleton(self, sigma: FloatArray) -> FloatArray:
        """Noise at each 30-minute boundary: bridges over pre and regular, a walk after."""
        n, chunks = sigma.shape
        rng = np.random.default_rng([self._seed, self.plan.ordinal, SKELETON_STREAM])
        variance = sigma**2 * CHUNK_MINUTES
        steps = rng.standard_normal((n, chunks)) * np.sqrt(variance)
        noise = np.zeros((n, chunks + 1))
        pre, regular, _ = self._phase_chunks
        for first, last, pinned in (
            (0, pre, True),
            (pre, pre + regular, True),
            (pre + regular, chunks, False),
        ):
            walk = np.cumsum(steps[:, first:last], axis=1)
            if pinned:
                cumulative = np.cumsum(variance[:, first:last], axis=1)
                walk = walk - walk[:, -1:] * cumulative / cumulative[:, -1:]
            # Every segment starts where the previous one is pinned: at zero noise.
            noise[:, first + 1 : last + 1] = walk
        return noise

    def _profile(self, t: FloatArray) -> FloatArray:
        """Deterministic log-price at minute instants ``t`` (minutes after 04:00), (n, len(t))."""
        p = self.plan
        pre, regular = self.pre_minutes, self.regular_minutes
        log_prev, log_open, log_close = np.log(p.prev_close), np.log(p.open), np.log(p.close)
        if t[-1] <= pre:
            jumped = t[None, :] > p.news_minute[:, None]
            share: FloatArray = np.where(
                p.news[:, None], 0.3 * t[None, :] / pre + 0.7 * jumped, t[None, :] / pre
            )
            return log_prev[:, None] + (log_open - log_prev)[:, None] * share
        if t[-1] <= pre + regular:
            tau = t - pre
            burst_end = self._burst(np.array([float(regular)]))[:, 0]
            drift = (log_close - log_open - burst_end)[:, None] * (tau[None, :] / regular)
            return log_open[:, None] + drift + self._burst(tau)
        after = t - pre - regular
        jumped = after[None, :] > p.post_news_minute[:, None]
        return log_close[:, None] + np.where(
            p.post_news[:, None] & jumped, p.post_news_log[:, None], 0.0
        )

    def _burst(self, tau: FloatArray) -> FloatArray:
        p = self.plan
        since = tau[None, :] - p.burst_start[:, None]
        rise = p.burst_rise[:, None].astype(np.float64)
        fade = p.burst_fade[:, None].astype(np.float64)
        retain = p.burst_retain[:, None]
        shape = np.where(
            since <= rise,
            np.clip(since / rise, 0.0, 1.0),
            1.0 - (1.0 - retain) * np.clip((since - rise) / fade, 0.0, 1.0),
        )
        return np.where(p.burst[:, None], p.burst_log[:, None] * shape, 0.0)

    def _volume_factor(self, minutes: IntArray) -> FloatArray:
        """Multipliers on expected minute volume: open and close auctions, bursts, news."""
        p = self.plan
        n = len(p.open)
        factor = np.ones((n, len(minutes)))
        tau = minutes - self.pre_minutes
        factor[:, tau == 0] *= OPEN_MINUTE_FACTOR
        factor[:, tau == self.regular_minutes - 1] *= CLOSE_MINUTE_FACTOR
        since = tau[None, :] - p.burst_start[:, None]
        rising = p.burst[:, None] & (since >= 0) & (since < p.burst_rise[:, None])
        fading = (
            p.burst[:, None]
            & (since >= p.burst_rise[:, None])
            & (since < (p.burst_rise + p.burst_fade)[:, None])
        )
        factor *= np.where(rising, BURST_RISE_VOLUME, np.where(fading, BURST_FADE_VOLUME, 1.0))
        pre_news = p.news[:, None] & (minutes[None, :] < self.pre_minutes)
        factor *= np.where(
            pre_news & (minutes[None, :] > p.news_minute[:, None]),
            3.0,
            np.where(pre_news, 0.3, 1.0),
        )
        after = minutes - self.pre_minutes - self.regular_minutes
        post_news = p.post_news[:, None] & (after[None, :] >= 0)
        factor *= np.where(
            post_news & (after[None, :] > p.post_news_minute[:, None]),
            2.5,
            np.where(post_news, 0.3, 1.0),
        )
        return factor

    def chunk(self, index: int) -> MinuteChunk:
        if not 0 <= index < self.chunks:
            raise IndexError(f"chunk {index} outside 0..{self.chunks - 1}")
        u = self._universe
        n = len(u)
        first = index * CHUNK_MINUTES
        minutes = np.arange(first, first + CHUNK_MINUTES, dtype=np.int64)
        rng = np.random.default_rng([self._seed, self.plan.ordinal, index, MINUTE_STREAM])
        sigma = self._sigma(index)

        # Temporaries are dropped as soon as they are used and updated in place: a chunk of
        # 11,882 symbols is 2.85 MB an array, and holding every step's array to the end would
        # cost ~60 MB at each draw. The operations and their order are those of the plain
        # expressions in the comments, so every value is the same to the bit.
        steps = rng.standard_normal((n, CHUNK_MINUTES))
        steps *= sigma
        walk = np.empty((n, CHUNK_MINUTES + 1))  # [0, cumsum(steps)]
        walk[:, 0] = 0.0
        np.cumsum(steps, axis=1, out=walk[:, 1:])
        del steps
        k = np.arange(CHUNK_MINUTES + 1) / CHUNK_MINUTES
        walk -= walk[:, -1:] * k[None, :]  # the bridge: walk - walk[:, -1:] * k
        start, end = self.skeleton[:, index : index + 1], self.skeleton[:, index + 1 : index + 2]
        noise = (end - start) * k[None, :]  # start + (end - start) * k + bridge
        np.add(start, noise, out=noise)
        noise += walk
        del walk
        t = np.arange(first, first + CHUNK_MINUTES + 1, dtype=np.float64)
        prices = self._profile(t)  # exp(profile + noise)
        prices += noise
        del noise
        np.exp(prices, out=prices)

        open_ = round_to_tick(prices[:, :-1])
        close = round_to_tick(prices[:, 1:])
        del prices
        # |N(0, 1)| * sigma * 0.4, for the high's and the low's wick
        wick = rng.standard_normal((2, n, CHUNK_MINUTES))
        np.abs(wick, out=wick)
        wick *= sigma[None, :, :]
        wick *= 0.4
        np.exp(wick[0], out=wick[0])
        high = np.maximum(open_, close)  # round(max(open, close) * exp(wick[0]))
        high *= wick[0]
        high = round_to_tick(high)
        np.negative(wick[1], out=wick[1])
        np.exp(wick[1], out=wick[1])
        low = np.minimum(open_, close)  # round(min(open, close) * exp(-wick[1]))
        low *= wick[1]
        low = round_to_tick(low)
        del wick
        vwap = open_ + high  # clip(round((open + high + low + close) / 4, 4), low, high)
        vwap += low
        vwap += close
        vwap /= 4.0
        np.round(vwap, 4, out=vwap)
        np.clip(vwap, low, high, out=vwap)

        expected = self._volume_factor(minutes)  # minute volume x factor
        np.multiply(self._minute_volume(index), expected, out=expected)
        p_active = expected / u.trade_size[:, None]  # -expm1(-trade rate)
        np.negative(p_active, out=p_active)
        np.expm1(p_active, out=p_active)
        np.negative(p_active, out=p_active)
        active = rng.random((n, CHUNK_MINUTES)) < p_active
        tau = minutes - self.pre_minutes
        active[:, (tau == 0) | (tau == self.regular_minutes - 1)] = True
        halted = (
            (self.plan.halt_start[:, None] >= 0)
            & (tau[None, :] >= self.plan.halt_start[:, None])
            & (tau[None, :] < self.plan.halt_start[:, None] + HALT_MINUTES)
        )
        active &= ~halted
        del halted
        idle = ~active
        conditional = expected  # expected / max(p_active, 1e-12)
        np.divide(expected, np.maximum(p_active, 1e-12, out=p_active), out=conditional)
        del p_active
        # where(active, max(rint(conditional * lognormal), 1), 0)
        conditional *= rng.lognormal(-0.125, 0.5, (n, CHUNK_MINUTES))
        np.rint(conditional, out=conditional)
        np.maximum(conditional, 1, out=conditional)
        conditional[idle] = 0
        volume = conditional.astype(np.int64)
        del conditional, expected
        # where(active, clip(rint(volume / (trade size x uniform)), 1, volume), 0)
        per_trade = rng.uniform(0.6, 1.4, (n, CHUNK_MINUTES))
        np.multiply(u.trade_size[:, None], per_trade, out=per_trade)
        np.divide(volume, per_trade, out=per_trade)
        np.rint(per_trade, out=per_trade)
        np.clip(per_trade, 1, volume, out=per_trade)
        per_trade[idle] = 0
        trades = per_trade.astype(np.int64)
        del per_trade

        start_ns = self.times.pre_open_ns + minutes * 60_000_000_000
        return MinuteChunk(
            first_minute=first,
            start_ns=start_ns,
            active=active,
            open=open_,
            high=high,
            low=low,
            close=close,
            vwap=vwap,
            volume=volume,
            trades=trades,
        )
