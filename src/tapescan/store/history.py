"""Reading history back: a scan at a past instant, its entries and exits, a symbol's bars.

Every question goes to the hot store and to the Parquet archive with the same query text (the
archive answers only for retired sessions), and every list is a page: rows in a total order,
at most ``limit`` of them, and a cursor holding the last key returned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from tapescan.scan.delta import SequenceGapError, Snapshot, apply
from tapescan.store.records import decode_delta, decode_keyframe
from tapescan.store.tables import DAILY_BARS, MINUTE_BARS


class Reader(Protocol):
    def read(self, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table: ...


class ArchiveReader(Reader, Protocol):
    def scan_at(self, scan: str, session: dt.date, at_ns: int) -> Snapshot | None: ...


class HistoryGapError(Exception):
    """Stored events do not chain (a sequence number is missing)."""


_EVENT = pa.schema([("seq", pa.int64()), ("asof_ns", pa.int64()), ("payload", pa.binary())])
_ENTRY = pa.schema(
    [
        ("session", pa.date32()),
        ("seq", pa.int64()),
        ("asof_ns", pa.int64()),
        ("symbol", pa.string()),
        ("entered", pa.bool_()),
        ("rank", pa.int32()),
    ]
)
_MINUTE = pa.schema(
    [(f.name, f.type) for f in MINUTE_BARS.schema if f.name not in ("session", "symbol")]
)
_DAILY = pa.schema([(f.name, f.type) for f in DAILY_BARS.schema if f.name != "symbol"])


@dataclass(frozen=True, slots=True)
class Page:
    rows: pa.Table
    more: bool


class History:
    def __init__(self, store: Reader, archive: ArchiveReader | None = None) -> None:
        self.archive = archive
        self.sources: tuple[Reader, ...] = (store,) if archive is None else (store, archive)

    def _page(
        self, sql: str, params: Sequence[Any], schema: pa.Schema, order: list[str], limit: int
    ) -> Page:
        """Up to ``limit`` rows over every source, in ``order`` (a total order)."""
        tables = [source.read(sql, [*params, limit + 1], schema) for source in self.sources]
        merged = pa.concat_tables(tables).sort_by([(c, "ascending") for c in order])
        return Page(merged.slice(0, limit), merged.num_rows > limit)

    # ------------------------------------------------------------------ time travel

    def scan_at(self, scan: str, session: dt.date, at_ns: int) -> Snapshot | None:
        """The scan as published at ``at_ns``: from the hot store, else from the archive."""
        try:
            found = scan_at_from_rows(self.sources[0], scan, session, at_ns)
            if found is None and self.archive is not None:
                found = self.archive.scan_at(scan, session, at_ns)
        except SequenceGapError as error:
            raise HistoryGapError(str(error)) from None
        return found

    def coverage(self, scan: str) -> tuple[int, int] | None:
        """First and last recorded instants of a scan (hot and archived)."""
        schema = pa.schema([("first", pa.int64()), ("last", pa.int64())])
        spans = [
            source.read(
                "SELECT min(asof_ns) AS first, max(asof_ns) AS last FROM scan_events "
                "WHERE scan = %s",
                [scan],
                schema,
            )
            for source in self.sources
        ]
        firsts = [t.column("first")[0].as_py() for t in spans if t.num_rows]
        lasts = [t.column("last")[0].as_py() for t in spans if t.num_rows]
        firsts, lasts = [v for v in firsts if v is not None], [v for v in lasts if v is not None]
        if not firsts:
            return None
        return min(firsts), max(lasts)

    # ------------------------------------------------------------------ lists

    def entries(
        self,
        scan: str,
        from_ns: int,
        to_ns: int,
        after: tuple[int, int, str] | None,
        limit: int,
    ) -> Page:
        """Entries and exits of ``scan`` with from <= asof < to, after the cursor key."""
        last = after or (from_ns - 1, 0, "")
        return self._page(
            "SELECT session, seq, asof_ns, symbol, entered, rank FROM scan_entries "
            "WHERE scan = %s AND asof_ns >= %s AND asof_ns < %s "
            "AND (asof_ns, seq, symbol) > (%s, %s, %s) "
            "ORDER BY asof_ns, seq, symbol LIMIT %s",
            [scan, from_ns, to_ns, *last],
            _ENTRY,
            ["asof_ns", "seq", "symbol"],
            limit,
        )

    def minute_bars(
        self,
        symbol: str,
        start: dt.datetime,
        end: dt.datetime,
        after: dt.datetime | None,
        limit: int,
    ) -> Page:
        since = (
            after if after is not None and after >= start else start - dt.timedelta(microseconds=1)
        )
        return self._page(
            "SELECT ts, open, high, low, close, volume, vwap, trades FROM minute_bars "
            "WHERE symbol = %s AND ts > %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
            [symbol, since, start, end],
            _MINUTE,
            ["ts"],
            limit,
        )

    def daily_bars(
        self, symbol: str, start: dt.date, end: dt.date, after: dt.date | None, limit: int
    ) -> Page:
        since = after if after is not None and after >= start else start - dt.timedelta(days=1)
        tables = self.sources[0].read(
            "SELECT date, open, high, low, close, volume FROM daily_bars "
            "WHERE symbol = %s AND date > %s AND date >= %s AND date < %s ORDER BY date LIMIT %s",
            [symbol, since, start, end, limit + 1],
            _DAILY,
        )
        return Page(tables.slice(0, limit), tables.num_rows > limit)


def scan_at_from_rows(source: Reader, scan: str, session: dt.date, at_ns: int) -> Snapshot | None:
    """The scan at ``at_ns`` from plain event rows: the nearest keyframe at or before it plus
    the deltas after it. Raises SequenceGapError when a delta is missing."""
    key = source.read(
        "SELECT seq, asof_ns, payload FROM scan_events WHERE session = %s AND scan = %s "
        "AND keyframe AND asof_ns <= %s ORDER BY seq DESC LIMIT 1",
        [session, scan, at_ns],
        _EVENT,
    )
    if key.num_rows == 0:
        return None
    seq, asof = int(key.column("seq")[0].as_py()), int(key.column("asof_ns")[0].as_py())
    snapshot = decode_keyframe(scan, seq, asof, key.column("payload")[0].as_py())
    deltas = source.read(
        "SELECT seq, asof_ns, payload FROM scan_events WHERE session = %s AND scan = %s "
        "AND NOT keyframe AND seq > %s AND asof_ns <= %s ORDER BY seq",
        [session, scan, seq, at_ns],
        _EVENT,
    )
    for d_seq, d_asof, payload in zip(
        deltas.column("seq").to_pylist(),
        deltas.column("asof_ns").to_pylist(),
        deltas.column("payload").to_pylist(),
        strict=True,
    ):
        snapshot = apply(snapshot, decode_delta(scan, d_seq, d_asof, payload))
    return Snapshot(scan, snapshot.seq, snapshot.asof_ns, snapshot.columns, snapshot.rows)
