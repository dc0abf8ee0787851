"""What the recorder turns live objects into: rows of the stored tables.

Scan events are stored as MessagePack payloads: a delta as ``[upsert, remove, order]`` and a
keyframe (a whole snapshot) as ``[columns, rows]``; sequence number and time are columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tapescan.feeds.history import SLOTS_PER_DAY
from tapescan.model import AggregateBatch, Universe
from tapescan.scan.delta import Delta, Snapshot
from tapescan.state.market_state import SessionSummary
from tapescan.store.tables import MINUTE_BARS, REPLACES, SCAN_ENTRIES, SCAN_EVENTS, SLOT_VOLUME

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def minute_bar_rows(
    batch: AggregateBatch,
    keep: npt.NDArray[np.bool_],
    session: dt.date,
    symbols: pa.Array,
    corrects: npt.NDArray[np.bool_] | None = None,
) -> pa.Table:
    """The kept rows of a minute batch as ``minute_bars`` rows; with ``corrects`` (of the same
    length as ``keep``), the kept rows it marks replace the stored bars of their keys (the
    ``REPLACES`` column, which the store reads and does not store)."""
    rows = np.flatnonzero(keep)
    n = len(rows)
    table = pa.Table.from_arrays(
        [
            pa.array(np.full(n, session, dtype="datetime64[D]"), pa.date32()),
            symbols.take(pa.array(batch.symbol_index[rows])),
            pa.array(batch.start_ns[rows] // 1000, MINUTE_BARS.schema.field("ts").type),
            pa.array(batch.open[rows]),
            pa.array(batch.high[rows]),
            pa.array(batch.low[rows]),
            pa.array(batch.close[rows]),
            pa.array(batch.volume[rows]),
            pa.array(batch.vwap[rows]),
            pa.array(batch.trades[rows].astype(np.int64)),
        ],
        schema=MINUTE_BARS.schema,
    )
    if corrects is not None:  # on every such table: the recorder concatenates them
        table = table.append_column(REPLACES, pa.array(corrects[rows], pa.bool_()))
    return table


def slot_volume_rows(
    session: dt.date,
    universe: Universe,
    slot_volume: npt.NDArray[np.integer] | npt.NDArray[np.floating],
) -> pa.Table:
    """One row per symbol that traded: its (192,) slot volume as uint32 little-endian bytes."""
    volume = np.asarray(slot_volume)
    traded = np.flatnonzero(volume.any(axis=1))
    blobs = np.ascontiguousarray(volume[traded], dtype="<u4")
    width = blobs.shape[1] * 4
    # one binary value per row straight over the matrix's bytes (no Python bytes per symbol)
    offsets = np.arange(0, (len(traded) + 1) * width, width, dtype=np.int32)
    profiles = pa.Array.from_buffers(
        pa.binary(), len(traded), [None, pa.py_buffer(offsets), pa.py_buffer(blobs)]
    )
    return pa.table(
        {
            "session": pa.array([session] * len(traded), pa.date32()),
            "symbol": pa.array([universe.symbols[i] for i in traded], pa.string()),
            "volume": profiles,
        },
        schema=SLOT_VOLUME.schema,
    )


def daily_bar_rows(summary: SessionSummary, symbols: pa.Array) -> pa.Table:
    """``daily_bars`` rows of a finished session: every symbol with a regular-session open."""
    traded = np.flatnonzero(~np.isnan(summary.open))
    return pa.table(
        {
            "date": pa.array([summary.date] * len(traded), pa.date32()),
            "symbol": symbols.take(pa.array(traded)),
            "open": summary.open[traded],
            "high": summary.high[traded],
            "low": summary.low[traded],
            "close": summary.close[traded],
            "volume": summary.volume[traded],
        }
    )


def slot_volume_matrix(rows: pa.Table, universe: Universe) -> npt.NDArray[np.uint32]:
    """The (symbols, 192) matrix back from ``slot_volume`` rows (unknown symbols dropped)."""
    matrix = np.zeros((len(universe), SLOTS_PER_DAY), dtype=np.uint32)
    fill_slot_volume(matrix, rows, universe)
    return matrix


def fill_slot_volume(
    matrix: npt.NDArray[np.uint32], rows: pa.Table | pa.RecordBatch, universe: Universe
) -> None:
    """Write the profiles of ``rows`` (``slot_volume`` rows) into their symbols' rows of
    ``matrix`` (unknown symbols dropped).

    Read straight from the column's one data buffer: a session's 11,882 profiles as Python
    bytes would be 9.5 MB of short-lived objects.
    """
    if rows.num_rows == 0:
        return
    index = universe.indices_of(rows.column("symbol").to_pylist())
    column = rows.column("volume")
    volume = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = SLOTS_PER_DAY * 4
    _, offsets_buffer, data_buffer = volume.buffers()
    offsets = np.frombuffer(
        offsets_buffer, dtype=np.int32, count=len(volume) + 1, offset=volume.offset * 4
    )
    if volume.null_count or not (np.diff(offsets) == width).all():
        raise ValueError(f"slot_volume rows must each hold {SLOTS_PER_DAY} uint32 volumes")
    profiles = np.frombuffer(
        data_buffer, dtype="<u4", count=len(volume) * SLOTS_PER_DAY, offset=int(offsets[0])
    ).reshape(len(volume), SLOTS_PER_DAY)
    known = index >= 0
    if known.all():
        matrix[index] = profiles  # no copy of the selected profiles first
    else:
        matrix[index[known]] = profiles[known]


def encode_delta(delta: Delta) -> bytes:
    return _encode([delta.upsert, delta.remove, delta.order])


def encode_keyframe(snapshot: Snapshot) -> bytes:
    return _encode([snapshot.columns, snapshot.rows])


def decode_keyframe(scan: str, seq: int, asof_ns: int, payload: bytes) -> Snapshot:
    columns, rows = _decode(payload)
    return Snapshot(scan, seq, asof_ns, tuple(columns), tuple(tuple(r) for r in rows))


def decode_delta(scan: str, seq: int, asof_ns: int, payload: bytes) -> Delta:
    upsert, remove, order = _decode(payload)
    return Delta(
        scan,
        seq,
        seq - 1,
        asof_ns,
        tuple(tuple(r) for r in upsert),
        tuple(remove),
        tuple(order) if order is not None else None,
    )


@dataclass(slots=True)
class ScanEventRows:
    """Builds ``scan_events`` and ``scan_entries`` rows; remembers each scan's members."""

    members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _events: list[tuple[dt.date, str, int, int, bool, bytes]] = field(default_factory=list)
    _entries: list[tuple[dt.date, str, int, int, str, bool, int | None]] = field(
        default_factory=list
    )

    def __len__(self) -> int:
        return len(self._events) + len(self._entries)

    def add(self, session: dt.date, deltas: Iterable[Delta], keyframes: Sequence[Snapshot]) -> None:
        for delta in deltas:
            self._events.append(
                (session, delta.scan, delta.seq, delta.asof_ns, False, encode_delta(delta))
            )
            self._membership(session, delta)
        for snapshot in keyframes:
            self._events.append(
                (
                    session,
                    snapshot.scan,
                    snapshot.seq,
                    snapshot.asof_ns,
                    True,
                    encode_keyframe(snapshot),
                )
            )
            self.members[snapshot.scan] = snapshot.symbols

    def _membership(self, session: dt.date, delta: Delta) -> None:
        if delta.order is None:
            return
        before = set(self.members.get(delta.scan, ()))
        for rank, symbol in enumerate(delta.order, start=1):
            if symbol not in before:
                self._entries.append(
                    (session, delta.scan, delta.seq, delta.asof_ns, symbol, True, rank)
                )
        for symbol in delta.remove:
            self._entries.append(
                (session, delta.scan, delta.seq, delta.asof_ns, symbol, False, None)
            )
        self.members[delta.scan] = delta.order

    def take(self) -> list[tuple[str, pa.Table]]:
        tables = []
        if self._events:
            tables.append(("scan_events", _table(SCAN_EVENTS.schema, self._events)))
        if self._entries:
            tables.append(("scan_entries", _table(SCAN_ENTRIES.schema, self._entries)))
        self._events, self._entries = [], []
        return tables


def _table(schema: pa.Schema, rows: Sequence[tuple[object, ...]]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)],
        schema=schema,
    )
