"""Server-to-client messages of the wire protocol (docs/protocol.md), encoded once and shared."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

import msgspec

from tapescan.market.calendar import ns_to_utc
from tapescan.scan.delta import Delta, Snapshot


class WireFormat(enum.Enum):
    JSON = "json"
    MSGPACK = "msgpack"


_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One message, encoded once per format at creation and then shared by every client.

    Only bytes are kept: queued frames hold no Python object trees, so a thousand queued frames
    cost the garbage collector nothing.
    """

    type: str
    json: bytes
    msgpack: bytes
    json_frame: bytes  # the whole WebSocket frame (RFC 6455, unmasked, no extensions)
    msgpack_frame: bytes

    @classmethod
    def of(cls, message: dict[str, Any]) -> Frame:
        text, binary = _json.encode(message), _msgpack.encode(message)
        return cls(
            str(message["type"]),
            text,
            binary,
            websocket_header(len(text), text=True) + text,
            websocket_header(len(binary), text=False) + binary,
        )

    def encoded(self, wire: WireFormat) -> bytes:
        return self.json if wire is WireFormat.JSON else self.msgpack

    def framed(self, wire: WireFormat) -> bytes:
        return self.json_frame if wire is WireFormat.JSON else self.msgpack_frame

    def decoded(self) -> dict[str, Any]:
        message: dict[str, Any] = msgspec.json.decode(self.json)
        return message


def websocket_header(length: int, text: bool) -> bytes:
    first = 0x80 | (0x1 if text else 0x2)  # FIN + opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


@functools.lru_cache(maxsize=64)  # a cycle's frames share one time: formatted once (~7 us)
def iso(ts_ns: int) -> str:
    moment = ns_to_utc(ts_ns)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def snapshot_frame(snapshot: Snapshot) -> Frame:
    return Frame.of(
        {
            "type": "snapshot",
            "scan": snapshot.scan,
            "seq": snapshot.seq,
            "asof": iso(snapshot.asof_ns),
            "columns": list(snapshot.columns),
            "rows": [list(row) for row in snapshot.rows],
        }
    )


def delta_frame(delta: Delta, sent_ns: int | None = None) -> Frame:
    """A delta; ``sent_ns`` (wall clock at the end of its cycle) is added for benchmarks."""
    message: dict[str, Any] = {
        "type": "delta",
        "scan": delta.scan,
        "seq": delta.seq,
        "prev_seq": delta.prev_seq,
        "asof": iso(delta.asof_ns),
        "upsert": [list(row) for row in delta.upsert],
        "remove": list(delta.remove),
    }
    if delta.order is not None:
        message["order"] = list(delta.order)
    if sent_ns is not None:
        message["sent_ns"] = sent_ns
    return Frame.of(message)


def error_frame(code: str, message: str) -> Frame:
    return Frame.of({"type": "error", "code": code, "message": message})


PONG = Frame.of({"type": "pong"})


CYCLE_PING_PREFIX = b"tc"  # payload of the fan-out's cycle pings: prefix + cycle (8 bytes)


def cycle_ping(cycle: int) -> bytes:
    """A framed ping whose payload names the cycle; the peer's WebSocket stack echoes it in a
    pong once it has read everything written before it (RFC 6455 5.5.2)."""
    payload = CYCLE_PING_PREFIX + cycle.to_bytes(8, "big")
    return bytes((0x89, len(payload))) + payload


def cycle_of_pong(payload: bytes) -> int | None:
    """The cycle a pong answers, or None for a pong of another ping (the keepalive's)."""
    if len(payload) != 10 or not payload.startswith(CYCLE_PING_PREFIX):
        return None
    return int.from_bytes(payload[2:], "big")
