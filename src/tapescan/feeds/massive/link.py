"""The Massive stocks WebSocket session as a sans-I/O state machine.

No sockets and no clock here: the shell (an asyncio loop) reports what happened (the socket
opened, status messages arrived, a data frame arrived, the socket closed, time passed) and
carries out the actions it gets back (connect, send, close, fail). Every rule of the session is
therefore testable without a network, and the same rules serve the real feed and the tests.

The session, as the server runs it (docs/live.md): the socket opens, the server says
``connected``, the client sends ``auth`` with its key, the server answers ``auth_success`` (or
``auth_failed`` and closes), the client subscribes and the server acknowledges each topic with
``success``; data frames follow. What this machine decides:

- ``auth_failed``: the key is wrong or the plan has no WebSocket access. Retrying cannot help,
  and a retry loop would hide the problem: FAILED, one line, exit code 2.
- ``max_connections``: another process holds this key's connection (two processes that both
  reconnect evict each other in a loop): a warning that says so, then the longest backoff.
- Any other end (1006, ``force_disconnect``, ``slow_consumer``, a handshake that does not
  finish, a socket that stays silent during a session): reconnect forever, with exponential
  backoff and jitter capped at ``backoff_cap_s``; the attempt count resets once data flows.
"""

from __future__ import annotations

import enum
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_CHANNELS = ("A", "AM", "LULD")
AUTH_FAILED_EXIT_CODE = 2


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"  # socket opening, or open and waiting for "connected"
    AUTHENTICATING = "authenticating"
    SUBSCRIBING = "subscribing"
    LIVE = "live"
    STALE = "stale"  # silent too long during a session: being closed, then reconnected
    RECONNECTING = "reconnecting"  # waiting out the backoff
    FAILED = "failed"  # final: the key was refused


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the socket (the shell then calls ``opened`` or ``closed``)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send one client message; its repr never shows the key."""

    text: str
    secret: bool = False

    def __repr__(self) -> str:
        return "Send(<auth, key withheld>)" if self.secret else f"Send({self.text!r})"


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket (the shell then calls ``closed``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Warn:
    """A line for the log and health; the session goes on."""

    message: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Stop the feed for good: the process says ``message`` and exits with ``exit_code``."""

    message: str
    exit_code: int = AUTH_FAILED_EXIT_CODE


Action = Connect | Send | Close | Warn | Fail


def topics(channels: Sequence[str] = DEFAULT_CHANNELS, symbols: Iterable[str] = ()) -> list[str]:
    """Subscription topics: every symbol (``A.*``) or, given symbols, each of them per channel."""
    chosen = list(symbols)
    if not channels:
        raise ValueError("subscribe to at least one channel (A, AM, LULD, ...)")
    for name in (*channels, *chosen):
        if not name or "," in name or any(c.isspace() for c in name):
            raise ValueError(f"not a channel or symbol: {name!r}")
    if not chosen:
        return [f"{channel}.*" for channel in channels]
    return [f"{channel}.{symbol}" for channel in channels for symbol in chosen]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt ``attempt`` (0 first): base x 2^attempt, capped, with
    "equal jitter" (half fixed, half random) so that many clients do not retry in step."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, math.ldexp(self.base_s, min(attempt, 30)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(slots=True)
class LinkCounters:
    connects: int = 0
    reconnects: int = 0
    sessions: int = 0  # times the link went live
    drops: dict[str, int] = field(default_factory=dict)  # by reason
    warnings: int = 0
    last_error: str = ""


class Link:
    """One WebSocket session to Massive and its reconnects; times are monotonic seconds."""

    def __init__(
        self,
        api_key: str,
        subscribe: Sequence[str],
        *,
        backoff: Backoff | None = None,
        handshake_timeout_s: float = 10.0,
        stale_after_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("no API key")
        if not subscribe:
            raise ValueError("nothing to subscribe to")
        self._key = api_key
        self.subscribe = tuple(subscribe)
        self.backoff = backoff or Backoff()
        self.handshake_timeout_s = handshake_timeout_s
        self.stale_after_s = stale_after_s
        self._rng = rng or random.Random()
        self.state = LinkState.CONNECTING
        self.counters = LinkCounters()
        self.acknowledged: set[str] = set()
        self.reconnect_at: float | None = None  # when RECONNECTING
        self._attempt = 0  # reconnects since data last flowed
        self._since = 0.0  # when the current state began
        self._last_frame = 0.0
        self._closing: str | None = None  # the reason of a Close asked for, until closed

    @property
    def failed(self) -> bool:
        return self.state is LinkState.FAILED

    def __repr__(self) -> str:
        return f"Link(state={self.state.value}, subscribe={len(self.subscribe)} topics)"

    # ------------------------------------------------------------------ events from the shell

    def start(self, now: float) -> list[Action]:
        if self.state is LinkState.FAILED:
            return []
        self.counters.connects += 1
        self._enter(LinkState.CONNECTING, now)
        return [Connect()]

    def opened(self, now: float) -> list[Action]:
        """The socket is open; the server speaks first ("connected")."""
        self._since = now
        return []

    def statuses(self, now: float, messages: Iterable[tuple[str, str]]) -> list[Action]:
        """Status messages of a frame, in order: ``(status, message)``."""
        actions: list[Action] = []
        if self.state is LinkState.FAILED:
            return actions
        self._last_frame = now
        for status, message in messages:
            actions += self._status(now, status, message)
            if self.failed:
                break
        return actions

    def data(self, now: float) -> list[Action]:
        """A frame with market data arrived: the subscription works, whatever was acked."""
        self._last_frame = now
        if self.state is LinkState.SUBSCRIBING:
            self._live(now)
        if self.state is LinkState.LIVE:
            self._attempt = 0  # data flows: the next drop starts the backoff over
        return []

    def closed(self, now: float, code: int | None = None, reason: str = "") -> list[Action]:
        """The socket is gone (or never opened): reconnect after the backoff, unless failed."""
        if self.state is LinkState.FAILED:
            return []
        kind = self._closing or (f"closed {code}" if code is not None else "connection lost")
        cause = f"{kind} ({reason})" if reason and not self._closing else kind
        self._closing = None
        self.counters.drops[kind] = self.counters.drops.get(kind, 0) + 1
        self.counters.last_error = cause
        delay = self.backoff.delay(self._attempt, self._rng)
        if kind == "max_connections":
            delay = max(delay, self.backoff.cap_s)
        self._attempt += 1
        self._enter(LinkState.RECONNECTING, now)
        self.reconnect_at = now + delay
        return []

    def tick(self, now: float, in_session: bool = True) -> list[Action]:
        """Time passed: reconnect when due, give up a stuck handshake, notice silence."""
        if self._closing is not None or self.state is LinkState.FAILED:
            return []
        if self.state is LinkState.RECONNECTING:
            if self.reconnect_at is not None and now >= self.reconnect_at:
                self.counters.reconnects += 1
                self.reconnect_at = None
                self._enter(LinkState.CONNECTING, now)
                return [Connect()]
            return []
        if self.state in (LinkState.CONNECTING, LinkState.AUTHENTICATING, LinkState.SUBSCRIBING):
            if now - self._since > self.handshake_timeout_s:
                return self._close(f"handshake not finished in {self.handshake_timeout_s:g} s")
            return []
        if (
            self.state is LinkState.LIVE
            and in_session
            and now - self._last_frame > self.stale_after_s
        ):
            self._enter(LinkState.STALE, now)
            return self._close(f"no frames for {self.stale_after_s:g} s")
        return []

    # ------------------------------------------------------------------ rules

    def _status(self, now: float, status: str, message: str) -> list[Action]:
        if status == "connected" and self.state is LinkState.CONNECTING:
            self._enter(LinkState.AUTHENTICATING, now)
            return [Send(json.dumps({"action": "auth", "params": self._key}), secret=True)]
        if status == "auth_success" and self.state is LinkState.AUTHENTICATING:
            self._enter(LinkState.SUBSCRIBING, now)
            self.acknowledged = set()
            params = ",".join(self.subscribe)
            return [Send(json.dumps({"action": "subscribe", "params": params}))]
        if status == "auth_failed":
            self._enter(LinkState.FAILED, now)
            self.counters.last_error = f"auth_failed: {message}"
            return [
                Fail(
                    f"Massive refused the API key ({message or 'auth_failed'}): check "
                    "MASSIVE_API_KEY, and that the plan includes WebSocket access"
                ),
                Close("auth_failed"),
            ]
        if status == "success":
            for topic in _acknowledged_topics(message):
                self.acknowledged.add(topic)
            if self.state is LinkState.SUBSCRIBING and self.acknowledged >= set(self.subscribe):
                self._live(now)
            return []
        if status == "max_connections":
            return [
                self._warn(
                    "Massive closed this connection: another process holds this API key's "
                    f"connection ({message}); retrying in {self.backoff.cap_s:g} s"
                ),
                *self._close("max_connections"),
            ]
        if status in ("force_disconnect", "slow_consumer", "auth_timeout"):
            return [self._warn(f"Massive: {status} ({message})"), *self._close(status)]
        if status in ("error", "auth_required"):
            if status == "error" and self.state is LinkState.SUBSCRIBING:
                # a topic the plan does not cover is answered with an error, never acked:
                # the session serves what was acknowledged rather than wait for it
                self._live(now)
            return [self._warn(f"Massive: {status} ({message})")]
        return []  # a status this client does not know: nothing to do

    def _live(self, now: float) -> None:
        self._enter(LinkState.LIVE, now)
        self.counters.sessions += 1
        self.counters.last_error = ""

    def _warn(self, message: str) -> Warn:
        self.counters.warnings += 1
        return Warn(message)

    def _close(self, reason: str) -> list[Action]:
        if self._closing is not None:
            return []
        self._closing = reason
        return [Close(reason)]

    def _enter(self, state: LinkState, now: float) -> None:
        self.state = state
        self._since = now
        if state is LinkState.LIVE:
            self._last_frame = now


def _acknowledged_topics(message: str) -> list[str]:
    """Topics of ``subscribed to: A.*`` (one per message, or several separated by commas)."""
    head, _, rest = message.partition(":")
    if head.strip().lower() != "subscribed to":
        return []
    return [topic.strip() for topic in rest.split(",") if topic.strip()]
