"""Pure parsing of Massive stocks WebSocket frames (bytes in, columnar batches out).

A frame is a JSON array of messages. Per-second (``A``) and per-minute (``AM``) aggregates become
AggregateBatch columns; ``LULD`` messages become price bands (a BandBatch) and, with a halt or
reopening indicator, halt events; status messages are returned as they are; other event types
are skipped.
Every field may be missing or wrong: such messages are counted and dropped, never raised, and
one bad message never costs the rest of its frame. Values beyond any real bar (a volume over
``VOLUME_MAX``, a price over ``PRICE_MAX``) count as malformed too; window starts are
normalized to ms whatever their unit (s, ms, µs or ns, told apart by magnitude).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from tapescan.model import (
    NS_PER_SECOND,
    AggregateBatch,
    AggregateKind,
    BandBatch,
    HaltEvent,
    Universe,
)

NS_PER_MS = 1_000_000
VOLUME_MAX = 1e12  # shares in one bar (the busiest stock trades ~2e9 in a day)
PRICE_MAX = 1e7  # dollars (the dearest US stock is below 1e6)
TRADES_MAX = 2**31 - 1
# A bar may start this far after the local clock (skew between this machine and Massive's);
# later ones are dropped: one bar dated years ahead would move the state's clock there.
AHEAD_NS = 5 * 60 * 1_000_000_000
# a window start in ms lies in [MS_MIN, MS_MAX] (1973 to 2255); smaller or larger values are
# read as seconds, or as µs or ns, when that puts them in the range
MS_MIN, MS_MAX = 1e11, 9e12
# LULD indicators (Massive's glossary): a halt ("suspended halt pause") and a reopening, sent for
# Nasdaq-listed symbols only; the others (15, 16, 19, 21, 22) publish or restate bands
LULD_HALT, LULD_REOPEN = 17, 18


class Message(msgspec.Struct, frozen=True):
    """Every field of A/AM/status that tapescan reads; all optional, unknown keys ignored."""

    ev: str | None = None
    sym: str | None = None
    v: float | None = None
    vw: float | None = None
    o: float | None = None
    h: float | None = None
    l: float | None = None  # noqa: E741 - the protocol's name
    c: float | None = None
    z: float | None = None
    s: int | None = None
    e: int | None = None
    status: str | None = None
    message: str | None = None
    T: str | None = None
    i: list[int] | None = None  # LULD's indicators
    t: float | None = None  # LULD's instant, in any unit


@dataclass(slots=True)
class ParseCounters:
    frames: int = 0
    aggregates: int = 0
    malformed_frames: int = 0
    malformed_messages: int = 0
    unknown_symbols: int = 0
    skipped_events: int = 0
    lulds: int = 0  # LULD messages read (bands, halts, reopenings)
    ahead_of_clock: int = 0  # bars that start after the clock (plus AHEAD_NS): dropped


@dataclass(slots=True)
class ParsedFrame:
    batches: list[AggregateBatch] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    halts: list[HaltEvent] = field(default_factory=list)  # from LULD halt/reopening messages
    bands: BandBatch | None = None  # from every LULD message with usable bands


class EventType(msgspec.Struct, frozen=True):
    ev: str | None = None


PARSED_EVENTS = frozenset({"A", "AM", "LULD", "status"})
_frame_decoder = msgspec.json.Decoder(list[Message])
_event_decoder = msgspec.json.Decoder(EventType)
_raw_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_message_decoder = msgspec.json.Decoder(Message)


def status_messages(frame: bytes) -> tuple[list[tuple[str, str]], bool]:
    """The ``(status, message)`` pairs of a frame, and whether it holds nothing else; a frame
    that does not decode has none (the parser counts it when it gets to it)."""
    try:
        messages = _frame_decoder.decode(frame)
    except msgspec.DecodeError:
        return [], False
    statuses = [(m.status or "", m.message or "") for m in messages if m.ev == "status"]
    return statuses, len(statuses) == len(messages)


class FrameParser:
    def __init__(self, universe: Universe) -> None:
        self._index = universe.mapping
        self.counters = ParseCounters()

    def _decode(self, frame: bytes) -> list[Message]:
        try:
            return _frame_decoder.decode(frame)
        except msgspec.DecodeError:
            pass
        # A message with a wrongly typed field spoils the fast path; decode one by one.
        try:
            raws = _raw_decoder.decode(frame)
        except msgspec.DecodeError:
            self.counters.malformed_frames += 1
            return []
        messages = []
        for raw in raws:
            try:
                if _event_decoder.decode(raw).ev not in PARSED_EVENTS:
                    self.counters.skipped_events += 1  # other events reuse names with other types
                    continue
                messages.append(_message_decoder.decode(raw))
            except msgspec.DecodeError:
                self.counters.malformed_messages += 1
        return messages

    def parse(self, frame: bytes) -> ParsedFrame:
        return self.parse_many((frame,))

    def parse_many(self, frames: Iterable[bytes]) -> ParsedFrame:
        """Frames received together (a drained socket buffer) as one batch per window length."""
        counters = self.counters
        parsed = ParsedFrame()
        seconds: list[Message] = []
        minutes: list[Message] = []
        lulds: list[Message] = []
        messages: list[Message] = []
        for frame in frames:
            counters.frames += 1
            messages.extend(self._decode(frame))
        for message in messages:
            if message.ev == "A":
                seconds.append(message)
            elif message.ev == "AM":
                minutes.append(message)
            elif message.ev == "LULD":
                lulds.append(message)
            elif message.ev == "status":
                parsed.statuses.append((message.status or "", message.message or ""))
            else:
                counters.skipped_events += 1
        if lulds:
            self._lulds(lulds, parsed)
        for kind, messages in ((AggregateKind.SECOND, seconds), (AggregateKind.MINUTE, minutes)):
            if messages:
                batch = self._columns(kind, messages)
                if batch is not None:
                    parsed.batches.append(batch)
        return parsed

    def _lulds(self, messages: list[Message], parsed: ParsedFrame) -> None:
        """LULD messages: their bands (finite, positive, ordered) as one batch; a halt or a
        reopening indicator as a halt event. A message with neither is malformed."""
        get = self._index.get
        rows = np.fromiter(
            (get(m.T or m.sym or "", -1) if (m.T or m.sym) else -2 for m in messages),
            np.int64,
            len(messages),
        )
        table = np.array([(m.t, m.h, m.l) for m in messages], dtype=np.float64).reshape(
            len(messages), 3
        )
        ts_ms = to_ms(table[:, 0])
        timed = ~np.isnan(ts_ms)
        ts_ns = np.where(timed, ts_ms, 0).astype(np.int64) * NS_PER_MS  # exact, in integers
        upper, lower = table[:, 1], table[:, 2]
        with np.errstate(invalid="ignore"):
            banded = (lower > 0) & (upper >= lower) & (upper <= PRICE_MAX)
        halted = np.array([LULD_HALT in (m.i or ()) for m in messages], dtype=np.bool_)
        reopened = np.array([LULD_REOPEN in (m.i or ()) for m in messages], dtype=np.bool_)
        usable = timed & (rows != -2) & (banded | halted | reopened)
        known = rows >= 0
        self.counters.malformed_messages += int((~usable).sum())
        self.counters.unknown_symbols += int((usable & ~known).sum())
        keep = usable & known
        self.counters.lulds += int(keep.sum())
        for at in np.flatnonzero(keep & (halted | reopened)):
            parsed.halts.append(
                HaltEvent(int(rows[at]), bool(halted[at]), "LULD pause", int(ts_ns[at]))
            )
        bands = np.flatnonzero(keep & banded)
        if len(bands):
            # frames read together may publish a symbol twice: its last bands only
            _, last = np.unique(rows[bands][::-1], return_index=True)
            bands = np.sort(bands[len(bands) - 1 - last])
            parsed.bands = BandBatch(
                rows[bands].astype(np.int32), upper[bands], lower[bands], int(ts_ns[bands].max())
            )

    def _columns(self, kind: AggregateKind, messages: list[Message]) -> AggregateBatch | None:
        get = self._index.get
        # -1: a symbol not in the universe, -2: no symbol at all
        rows = np.fromiter(
            (get(m.sym, -1) if m.sym else -2 for m in messages), np.int64, len(messages)
        )
        # one pass over the messages; a missing field (None) becomes NaN
        table = np.array(
            [(m.s, m.o, m.h, m.l, m.c, m.v, m.vw, m.z) for m in messages], dtype=np.float64
        ).reshape(len(messages), 8)
        start_ms = to_ms(table[:, 0])
        values = {
            name: table[:, i + 1] for i, name in enumerate(("o", "h", "l", "c", "v", "vw", "z"))
        }
        complete = ~np.isnan(start_ms) & (rows != -2)
        for name in ("o", "h", "l", "c", "v"):
            complete &= ~np.isnan(values[name])
        with np.errstate(invalid="ignore"):  # NaN compares False: the rule above has it
            complete &= ~(np.abs(values["v"]) > VOLUME_MAX)
            for name in ("o", "h", "l", "c", "vw"):
                complete &= ~(values[name] > PRICE_MAX)
        known = rows >= 0
        self.counters.malformed_messages += int((~complete).sum())
        self.counters.unknown_symbols += int((complete & ~known).sum())
        keep = complete & known
        if not keep.any():
            return None
        self.counters.aggregates += int(keep.sum())
        volume = values["v"][keep]
        vwap = values["vw"][keep]
        typical = (values["h"][keep] + values["l"][keep] + values["c"][keep]) / 3
        # z is the average trade size of the window: trades = volume / z.
        size = values["z"][keep]
        usable = size > 0
        with np.errstate(over="ignore"):  # a tiny z: inf, capped below
            trades = np.where(usable, np.rint(volume / np.where(usable, size, 1.0)), 0)
        trades = np.clip(trades, 0, TRADES_MAX)
        return AggregateBatch(
            kind=kind,
            symbol_index=rows[keep].astype(np.int32),
            start_ns=(start_ms[keep].astype(np.int64) * NS_PER_MS) // NS_PER_SECOND * NS_PER_SECOND,
            open=values["o"][keep],
            high=values["h"][keep],
            low=values["l"][keep],
            close=values["c"][keep],
            volume=np.round(volume).astype(np.int64),
            vwap=np.where(np.isnan(vwap), typical, vwap),
            trades=trades.astype(np.int32),
        )


def to_ms(starts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Instants in ms, whatever their unit (s, ms, µs or ns); NaN where none fits (missing, zero,
    negative, out of range)."""
    out = np.full(starts.shape, np.nan)
    for scale in (1.0, 1e3, 1e-3, 1e-6):  # ms, s, µs, ns
        scaled = starts * scale
        with np.errstate(invalid="ignore"):
            fits = np.isnan(out) & (scaled >= MS_MIN) & (scaled <= MS_MAX)
        out[fits] = np.floor(scaled[fits])
    return out


def not_ahead(batch: AggregateBatch, now_ns: int, counters: ParseCounters) -> AggregateBatch | None:
    """``batch`` without its bars that start more than ``AHEAD_NS`` after ``now_ns`` (counted);
    None when none is left."""
    ahead = batch.start_ns > now_ns + AHEAD_NS
    if not ahead.any():
        return batch
    counters.ahead_of_clock += int(ahead.sum())
    keep = np.flatnonzero(~ahead)
    return batch.take(keep) if len(keep) else None


def lulds_of(
    parsed: ParsedFrame, now_ns: int, counters: ParseCounters, resume_ns: int | None = None
) -> list[HaltEvent | BandBatch]:
    """``parsed``'s halts and bands, stamped now; halts dated more than ``AHEAD_NS`` after
    ``now_ns`` are dropped and counted (one would move the state's clock there), and so is
    what a restart already has (at or before ``resume_ns``)."""
    events: list[HaltEvent | BandBatch] = []
    for halt in parsed.halts:
        if halt.ts_event_ns > now_ns + AHEAD_NS:
            counters.ahead_of_clock += 1
        elif resume_ns is None or halt.ts_event_ns > resume_ns:
            events.append(dataclasses.replace(halt, ts_init_ns=time.time_ns()))
    if parsed.bands is not None:
        events.append(dataclasses.replace(parsed.bands, ts_init_ns=time.time_ns()))
    return events
