"""Snapshots and deltas of a scan's result, and the pure ``apply`` that joins them.

A delta carries the rows that are new or whose displayed values changed (``upsert``), the symbols
that left (``remove``) and, whenever the sequence of symbols changed, the new ``order``. A client
applies a delta only when its ``prev_seq`` equals the ``seq`` it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tapescan.scan.display import WireValue

Row = tuple[WireValue, ...]


class SequenceGapError(ValueError):
    """A delta does not follow the snapshot it was applied to; the client must resync."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    scan: str
    seq: int
    asof_ns: int
    columns: tuple[str, ...]
    rows: tuple[Row, ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in self.rows)


@dataclass(frozen=True, slots=True)
class Delta:
    scan: str
    seq: int
    prev_seq: int
    asof_ns: int
    upsert: tuple[Row, ...]
    remove: tuple[str, ...]
    order: tuple[str, ...] | None

    @property
    def empty(self) -> bool:
        return not self.upsert and not self.remove and self.order is None


def diff(previous: Snapshot, rows: Sequence[Row], asof_ns: int) -> Delta:
    """The delta that turns ``previous`` into a result of ``rows`` (reference implementation)."""
    before = {row[0]: row for row in previous.rows}
    symbols = tuple(str(row[0]) for row in rows)
    upsert = tuple(row for row in rows if before.get(row[0]) != tuple(row))
    kept = set(symbols)
    remove = tuple(s for s in previous.symbols if s not in kept)
    order = symbols if symbols != previous.symbols else None
    return Delta(previous.scan, previous.seq + 1, previous.seq, asof_ns, upsert, remove, order)


def apply(snapshot: Snapshot, delta: Delta) -> Snapshot:
    """The next snapshot: ``snapshot`` with ``delta`` applied. Pure; raises on a sequence gap."""
    if delta.scan != snapshot.scan or delta.prev_seq != snapshot.seq:
        raise SequenceGapError(
            f"delta {delta.scan}#{delta.prev_seq}->{delta.seq} "
            f"does not follow {snapshot.scan}#{snapshot.seq}"
        )
    rows = {str(row[0]): row for row in snapshot.rows}
    for symbol in delta.remove:
        rows.pop(symbol, None)
    for row in delta.upsert:
        rows[str(row[0])] = tuple(row)
    order = (
        delta.order if delta.order is not None else tuple(s for s in snapshot.symbols if s in rows)
    )
    return Snapshot(
        snapshot.scan, delta.seq, delta.asof_ns, snapshot.columns, tuple(rows[s] for s in order)
    )
