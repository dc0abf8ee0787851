"""Server-to-client messages of the wire protocol (docs/protocol.md), encoded once and shared."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tapescan.market.calendar import ns_to_utc
from tapescan.scan.delta import Delta, Snapshot


class WireFormat(enum.Enum):
    JSON = "json"
    MSGPACK = "msgpack"


_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


@dataclass(slots=True, eq=False)
class Frame:
    """One message, encoded lazily at most once per format, then shared by every client."""

    message: dict[str, Any]
    _encoded: dict[WireFormat, bytes] = field(default_factory=dict)

    def encoded(self, wire: WireFormat) -> bytes:
        data = self._encoded.get(wire)
        if data is None:
            data = (
                _json.encode(self.message)
                if wire is WireFormat.JSON
                else _msgpack.encode(self.message)
            )
            self._encoded[wire] = data
        return data

    @property
    def type(self) -> str:
        return str(self.message["type"])


def iso(ts_ns: int) -> str:
    moment = ns_to_utc(ts_ns)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def snapshot_frame(snapshot: Snapshot) -> Frame:
    return Frame(
        {
            "type": "snapshot",
            "scan": snapshot.scan,
            "seq": snapshot.seq,
            "asof": iso(snapshot.asof_ns),
            "columns": list(snapshot.columns),
            "rows": [list(row) for row in snapshot.rows],
        }
    )


def delta_frame(delta: Delta) -> Frame:
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
    return Frame(message)


def error_frame(code: str, message: str) -> Frame:
    return Frame({"type": "error", "code": code, "message": message})


PONG = Frame({"type": "pong"})
