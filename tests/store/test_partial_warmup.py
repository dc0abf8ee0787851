"""A warm-up that takes the sessions the store holds and asks the feed for the others ends in
the state a warm-up wholly from the feed gives (the next day's start asks for one session)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tapescan.feeds.history import Warmup, WarmupSession
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import market_calendar
from tapescan.state.market_state import MarketState
from tapescan.store.base import Store
from tapescan.store.records import slot_volume_rows
from tapescan.store.tables import DAILY_BARS
from tapescan.store.warm import stored_history, warmup_from_store, with_fetched

CAL = market_calendar()
SESSION = dt.date(2026, 11, 25)
SYMBOLS = 40


def warmed(feed: SimFeed, warmup: Warmup) -> MarketState:
    state = MarketState(feed.universe, CAL, SESSION)
    state.load_warmup(warmup)
    return state


def keep(store: Store, feed: SimFeed, item: WarmupSession) -> None:
    store.write("daily_bars", item.daily.select(list(DAILY_BARS.columns)))
    if item.slot_volume is not None:
        store.write("slot_volume", slot_volume_rows(item.date, feed.universe, item.slot_volume))


def test_the_stored_sessions_and_the_fetched_ones_warm_up_as_the_feed_alone(store: Store) -> None:
    feed = SimFeed(SimMarket(5, SYMBOLS, CAL))
    sessions = list(feed.warmup(SESSION).sessions)
    assert len(sessions) == 40
    yesterday, old = sessions[-1].date, sessions[5].date
    # a run the day before stored its own warm-up (yesterday is not in it), and one session
    # of the baseline lacks its slot profile
    for item in sessions:
        if item.date in (yesterday, old):
            continue
        slotless = item.date == sessions[-4].date
        keep(store, feed, WarmupSession(item.date, item.daily, None) if slotless else item)

    history = stored_history(store, CAL, SESSION)
    assert not history.complete
    assert history.missing == [old, sessions[-4].date, yesterday]
    assert len(history.stored) == 37
    asked: list[dt.date] = []

    def fetched() -> list[WarmupSession]:
        items = list(feed.warmup(SESSION, only=history.missing).sessions)
        asked.extend(item.date for item in items)
        return items

    stored = warmup_from_store(store, feed.universe, history, sessions=history.stored)
    partial = warmed(feed, with_fetched(stored, fetched()))
    whole = warmed(feed, Warmup(SESSION, sessions))
    assert asked == history.missing  # the feed drew those three only
    np.testing.assert_array_equal(partial.prev_close, whole.prev_close)
    np.testing.assert_array_equal(partial.avg_volume_20d, whole.avg_volume_20d)
    np.testing.assert_array_equal(partial.atr_state.atr, whole.atr_state.atr)
    assert np.isfinite(whole.atr_state.atr).sum() > SYMBOLS / 2
    np.testing.assert_array_equal(
        partial.rvol_history.baseline_cumulative, whole.rvol_history.baseline_cumulative
    )
    assert whole.rvol_history.complete


def test_a_store_with_every_session_is_complete_and_an_empty_one_lacks_all(store: Store) -> None:
    feed = SimFeed(SimMarket(5, SYMBOLS, CAL))
    empty = stored_history(store, CAL, SESSION)
    assert not empty.complete
    assert empty.stored == []
    assert len(empty.missing) == 40
    for item in feed.warmup(SESSION).sessions:
        keep(store, feed, item)
    full = stored_history(store, CAL, SESSION)
    assert full.complete
    assert full.missing == []


@pytest.mark.parametrize("only", [[], [dt.date(2026, 11, 24)]])
def test_the_simulated_feed_draws_only_the_sessions_asked(only: list[dt.date]) -> None:
    feed = SimFeed(SimMarket(5, SYMBOLS, CAL))
    items = list(feed.warmup(SESSION, only=only).sessions)
    assert [item.date for item in items] == only
    assert all(item.slot_volume is not None for item in items)
