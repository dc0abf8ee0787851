"""The Massive session's rules, without a network: what the link does at each event."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.feeds.massive.link import (
    AUTH_FAILED_EXIT_CODE,
    Action,
    Backoff,
    Close,
    Connect,
    Fail,
    Link,
    LinkState,
    Send,
    Warn,
    topics,
)

KEY = "test-key-not-real-7f3a"
TOPICS = topics()


def state(link: Link) -> LinkState:
    """The link's state now (read through a call: each event may change it)."""
    return link.state


def live_link(now: float = 0.0) -> Link:
    link = Link(KEY, TOPICS, rng=random.Random(1))
    assert link.start(now) == [Connect()]
    link.opened(now)
    link.statuses(now, [("connected", "Connected Successfully")])
    link.statuses(now, [("auth_success", "authenticated")])
    link.statuses(now, [("success", f"subscribed to: {t}") for t in TOPICS])
    assert state(link) is LinkState.LIVE
    return link


def test_topics_cover_every_symbol_by_default_or_the_ones_given() -> None:
    assert topics() == ["A.*", "AM.*", "LULD.*"]
    assert topics(("AM",), ["AAPL", "BRK.A"]) == ["AM.AAPL", "AM.BRK.A"]
    for bad in ([""], ["A,B"], ["A B"]):
        with pytest.raises(ValueError, match="not a channel or symbol"):
            topics(("AM",), bad)


def test_the_handshake_waits_for_each_answer_before_the_next_step() -> None:
    link = Link(KEY, TOPICS)
    assert link.start(0.0) == [Connect()]
    assert link.opened(0.1) == []
    assert state(link) is LinkState.CONNECTING  # the socket's opening is not a login
    (auth,) = link.statuses(0.2, [("connected", "Connected Successfully")])
    assert isinstance(auth, Send)
    assert json.loads(auth.text) == {"action": "auth", "params": KEY}
    assert state(link) is LinkState.AUTHENTICATING
    (subscribe,) = link.statuses(0.3, [("auth_success", "authenticated")])
    assert isinstance(subscribe, Send)
    assert json.loads(subscribe.text) == {"action": "subscribe", "params": "A.*,AM.*,LULD.*"}
    link.statuses(0.4, [("success", "subscribed to: A.*"), ("success", "subscribed to: AM.*")])
    assert state(link) is LinkState.SUBSCRIBING
    link.statuses(0.5, [("success", "subscribed to: LULD.*")])
    assert state(link) is LinkState.LIVE


def test_data_before_every_acknowledgement_means_the_subscription_works() -> None:
    link = Link(KEY, TOPICS)
    link.start(0.0)
    link.statuses(0.0, [("connected", "")])
    link.statuses(0.0, [("auth_success", "")])
    link.statuses(0.1, [("success", "subscribed to: A.*, AM.*")])  # one combined message
    assert link.acknowledged == {"A.*", "AM.*"}
    link.data(0.2)
    assert state(link) is LinkState.LIVE


def test_the_key_is_never_in_a_repr_a_counter_or_a_message() -> None:
    link = Link(KEY, TOPICS)
    actions = [*link.start(0.0), *link.statuses(0.0, [("connected", "")])]
    actions += link.statuses(0.1, [("auth_failed", "authentication failed")])
    shown = repr(actions) + repr(link) + repr(link.counters) + str(link.state)
    shown += " ".join(a.message for a in actions if isinstance(a, Fail | Warn))
    assert KEY not in shown


def test_a_refused_key_fails_for_good_with_exit_code_2_and_no_retry() -> None:
    link = Link(KEY, TOPICS)
    link.start(0.0)
    link.statuses(0.0, [("connected", "")])
    actions = link.statuses(0.1, [("auth_failed", "authentication failed")])
    (fail,) = [a for a in actions if isinstance(a, Fail)]
    assert fail.exit_code == AUTH_FAILED_EXIT_CODE == 2
    assert "MASSIVE_API_KEY" in fail.message
    assert "authentication failed" in fail.message
    assert Close("auth_failed") in actions
    assert link.closed(0.2, 1000) == []
    for second in range(1, 120):
        assert link.tick(float(second)) == []
    assert state(link) is LinkState.FAILED


def test_a_drop_reconnects_within_a_second_and_resubscribes() -> None:
    link = live_link()
    assert link.closed(600.0, 1006) == []
    assert state(link) is LinkState.RECONNECTING
    assert link.reconnect_at is not None
    assert 600.0 < link.reconnect_at <= 600.5  # the first retry: base 0.5 s, jittered
    assert link.tick(link.reconnect_at - 0.01) == []
    assert link.tick(link.reconnect_at) == [Connect()]
    link.opened(601.0)
    link.statuses(601.0, [("connected", "")])
    (subscribe,) = link.statuses(601.1, [("auth_success", "")])
    assert isinstance(subscribe, Send)
    assert json.loads(subscribe.text)["params"] == ",".join(TOPICS)
    assert link.counters.reconnects == 1
    assert link.counters.drops == {"closed 1006": 1}


def test_backoff_doubles_with_jitter_up_to_30_s_and_resets_once_data_flows() -> None:
    link = live_link()
    now, delays = 0.0, []
    for _ in range(12):  # the server keeps refusing the socket
        link.closed(now)
        assert link.reconnect_at is not None
        delays.append(link.reconnect_at - now)
        now = link.reconnect_at
        assert link.tick(now) == [Connect()]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    assert delays[-1] >= 15.0  # capped, not given up: it goes on trying
    link.opened(now)
    link.statuses(now, [("connected", "")])
    link.statuses(now, [("auth_success", "")])
    link.data(now)  # live again
    link.closed(now + 1)
    assert link.reconnect_at is not None
    assert link.reconnect_at - (now + 1) <= 0.5


def test_another_process_on_the_key_is_named_and_backed_off_the_longest() -> None:
    link = live_link()
    actions = link.statuses(10.0, [("max_connections", "Maximum number of connections exceeded.")])
    (warn,) = [a for a in actions if isinstance(a, Warn)]
    assert "another process" in warn.message
    assert Close("max_connections") in actions
    link.closed(10.1, 1008)
    assert state(link) is LinkState.RECONNECTING
    assert link.reconnect_at is not None
    assert link.reconnect_at - 10.1 >= 30.0
    assert link.counters.drops == {"max_connections": 1}


@pytest.mark.parametrize("status", ["force_disconnect", "slow_consumer", "auth_timeout"])
def test_a_server_side_drop_warns_closes_and_reconnects(status: str) -> None:
    link = live_link()
    actions = link.statuses(5.0, [(status, "")])
    assert any(isinstance(a, Warn) for a in actions)
    assert Close(status) in actions
    link.closed(5.1, 1011)
    assert state(link) is LinkState.RECONNECTING
    assert link.counters.last_error == status


def test_silence_during_a_session_closes_the_socket_but_not_outside_one() -> None:
    link = live_link(0.0)
    link.data(100.0)
    assert link.tick(129.0) == []
    assert link.tick(200.0, in_session=False) == []  # no trades overnight: no frames is normal
    assert link.tick(131.0) == [Close("no frames for 30 s")]
    assert state(link) is LinkState.STALE
    assert link.tick(140.0) == []  # the close is under way
    link.closed(140.5)
    assert state(link) is LinkState.RECONNECTING
    assert link.counters.last_error == "no frames for 30 s"


def test_a_handshake_that_never_finishes_is_given_up_and_retried() -> None:
    link = Link(KEY, TOPICS, handshake_timeout_s=10.0)
    link.start(0.0)
    link.opened(0.0)
    assert link.tick(9.0) == []
    assert link.tick(10.5) == [Close("handshake not finished in 10 s")]
    link.closed(10.6)
    assert state(link) is LinkState.RECONNECTING


def test_unknown_and_error_statuses_do_not_end_the_session() -> None:
    link = live_link()
    actions = link.statuses(1.0, [("error", "not authorized for Q.*"), ("novel", "?")])
    assert actions == [Warn("Massive: error (not authorized for Q.*)")]
    assert state(link) is LinkState.LIVE


EVENTS = st.one_of(
    st.tuples(st.just("opened")),
    st.tuples(
        st.just("statuses"),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "connected",
                        "auth_success",
                        "auth_failed",
                        "success",
                        "max_connections",
                        "force_disconnect",
                        "slow_consumer",
                        "error",
                        "x",
                    ]
                ),
                st.text(max_size=30),
            ),
            max_size=4,
        ),
    ),
    st.tuples(st.just("data")),
    st.tuples(st.just("closed"), st.one_of(st.none(), st.integers(1000, 4999))),
    st.tuples(st.just("tick"), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), EVENTS), max_size=40))
def test_any_sequence_of_events_keeps_the_rules(
    steps: list[tuple[float, tuple[object, ...]]],
) -> None:
    """Never raises; a failed link stays failed and silent; waits stay within the cap."""
    link = Link(KEY, TOPICS, rng=random.Random(0))
    now = 0.0
    link.start(now)
    failed = False
    for gap, event in steps:
        now += gap
        name, *args = event
        handler: Callable[..., list[Action]] = getattr(link, str(name))
        actions = handler(now, *args)
        if failed:
            assert actions == []
            assert state(link) is LinkState.FAILED
        failed = state(link) is LinkState.FAILED
        if name == "closed" and state(link) is LinkState.RECONNECTING:
            assert link.reconnect_at is not None
            assert now <= link.reconnect_at <= now + Backoff().cap_s
        assert KEY not in repr(actions)


def test_a_topic_answered_with_an_error_does_not_hold_the_session_in_subscribing() -> None:
    link = Link(KEY, TOPICS)
    link.start(0.0)
    link.statuses(0.0, [("connected", "")])
    link.statuses(0.0, [("auth_success", "")])
    link.statuses(0.1, [("success", "subscribed to: A.*"), ("success", "subscribed to: AM.*")])
    link.statuses(0.2, [("error", "not authorized for LULD.*")])
    assert state(link) is LinkState.LIVE
    assert link.tick(60.0, in_session=False) == []  # no handshake timeout at night


def test_the_backoff_starts_over_only_once_data_flows() -> None:
    link = live_link()  # acknowledged, no data yet
    link.closed(1.0)
    link.tick(100.0)
    link.opened(100.0)
    link.statuses(100.0, [("connected", "")])
    link.statuses(100.0, [("auth_success", "")])
    link.statuses(100.0, [("success", f"subscribed to: {t}") for t in TOPICS])
    link.statuses(100.1, [("slow_consumer", "")])  # acked, then dropped before any data
    link.closed(100.2)
    assert link.reconnect_at is not None
    assert link.reconnect_at - 100.2 >= 0.5  # the second attempt's wait, not the first's


def test_data_before_the_login_answer_does_not_count_as_subscribed() -> None:
    link = Link(KEY, TOPICS)
    link.start(0.0)
    link.statuses(0.0, [("connected", "")])
    link.data(0.1)
    assert state(link) is LinkState.AUTHENTICATING
    (subscribe,) = link.statuses(0.2, [("auth_success", "")])
    assert isinstance(subscribe, Send)
