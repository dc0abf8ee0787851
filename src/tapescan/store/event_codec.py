"""The compact archive layout of scan events: memberships per event, values once per symbol.

Every scan of a cycle computes a symbol's values from the same market state, so the gainers list
and the high-RVOL list show the same price and volume for the same symbol at the same instant.
The plain layout repeats those values in every scan's delta (46.6M upserted cells in a simulated
day, of which 13.5M are distinct changes). The compact layout keeps:

- the events themselves, one row each with the table's own schema and key, whose ``payload``
  holds only the membership: a keyframe's ``[columns, symbols]``; a delta's
  ``[removed, at, placed]`` when its symbols changed (``placed`` are the symbols written at the
  positions ``at`` of the new order, the rest keep their old relative order), or ``[]`` when only
  values changed;
- a ``values`` table with one row per change of a symbol's value of a column: the cycle's tick
  (the index of its time among the session's event times), and the number as the difference
  from the previous number of the same symbol and column (prices, percentages and ratios in
  10,000ths), or the text.

A scan at a tick is its symbols with their values at that tick; a delta is ``scan.delta.diff``
between two such snapshots. ``encode`` builds both tables and then decodes them and compares
every payload byte for byte with its input; when anything differs (a value that is not a whole
number of 10,000ths, two scans disagreeing on a value in one cycle, a delta the rebuilt one does
not equal) it raises ``NotCompactError`` and the session is archived in the plain layout instead.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tapescan.scan.delta import SequenceGapError, Snapshot
from tapescan.scan.display import WireValue
from tapescan.store.codecs import NotCompactError, codes, group_starts, running_sums
from tapescan.store.duck import sql_string
from tapescan.store.tables import SCAN_EVENTS, conform

LAYOUT = "scan-events-values-1"
SCALE = 10_000  # floats are stored as whole 10,000ths
_MAX_SCALED = 2**53
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

VALUES_SCHEMA = pa.schema(
    [
        ("symbol", pa.dictionary(pa.int32(), pa.string())),
        ("column", pa.dictionary(pa.int16(), pa.string())),
        ("tick", pa.int32()),
        ("number", pa.int64()),  # difference from the key's previous number; null: text or null
        ("text", pa.string()),
    ]
)

Row = tuple[WireValue, ...]


@dataclass(frozen=True, slots=True)
class CompactEvents:
    events: pa.Table  # SCAN_EVENTS schema, membership payloads
    values: pa.Table  # VALUES_SCHEMA, in (symbol, column, tick) order
    types: dict[str, str]  # column -> "float" | "int" | "bool" | "text"


# ---------------------------------------------------------------------- encoding


def _type_of(value: WireValue) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "text"


def time_order(events: pa.Table) -> npt.NDArray[np.int64]:
    """Row indices in the order the events happened: time, scan, seq, delta before keyframe."""
    order = pc.sort_indices(
        events,
        sort_keys=[
            ("asof_ns", "ascending"),
            ("scan", "ascending"),
            ("seq", "ascending"),
            ("keyframe", "ascending"),
        ],
    )
    return np.asarray(order.to_numpy(), dtype=np.int64)


def _placement(before: Sequence[str], after: Sequence[str], removed: Sequence[str]) -> list[Any]:
    """``[removed, at, placed]``: the fewest symbols to place so that ``after`` results."""
    gone = set(removed)
    position = {symbol: i for i, symbol in enumerate(before) if symbol not in gone}
    indices = [position.get(symbol, -1) for symbol in after]
    # Keep the longest run of old symbols already in order; place every other one.
    tails: list[int] = []
    tails_at: list[int] = []
    parent = [-1] * len(after)
    for k, index in enumerate(indices):
        if index < 0:
            continue
        j = bisect.bisect_left(tails, index)
        parent[k] = tails_at[j - 1] if j else -1
        if j == len(tails):
            tails.append(index)
            tails_at.append(k)
        else:
            tails[j], tails_at[j] = index, k
    kept: set[int] = set()
    k = tails_at[-1] if tails_at else -1
    while k >= 0:
        kept.add(k)
        k = parent[k]
    at = [k for k in range(len(after)) if k not in kept]
    return [list(removed), at, [after[k] for k in at]]


def _apply_placement(before: Sequence[str], edit: Sequence[Any]) -> tuple[str, ...]:
    removed, at, placed = edit
    moved = set(placed) | set(removed)
    stable = iter([s for s in before if s not in moved])
    slots = dict(zip(at, placed, strict=True))
    size = len(before) - len(set(removed)) + len([p for p in placed if p not in before])
    return tuple(slots[k] if k in slots else next(stable) for k in range(size))


class _Changes:
    """Value changes in compact arrays (symbol and column as small ids): ~19 bytes each."""

    def __init__(self) -> None:
        self.symbol_ids: dict[str, int] = {}
        self.column_ids: dict[str, int] = {}
        self.texts: dict[str, int] = {}
        self.symbol = array("i")
        self.column = array("h")
        self.tick = array("i")
        self.number = array("q")
        self.flag = array("b")  # 0: number, 1: null, 2: text (number holds the text's id)

    def add(self, symbol: str, column: str, tick: int, kind: str, value: WireValue) -> None:
        self.symbol.append(self.symbol_ids.setdefault(symbol, len(self.symbol_ids)))
        if column not in self.column_ids:
            if len(self.column_ids) >= 2**15:
                raise NotCompactError("more than 32,767 columns")
            self.column_ids[column] = len(self.column_ids)
        self.column.append(self.column_ids[column])
        self.tick.append(tick)
        if value is None:
            self.number.append(0)
            self.flag.append(1)
        elif kind == "text":
            self.number.append(self.texts.setdefault(str(value), len(self.texts)))
            self.flag.append(2)
        else:
            self.number.append(_scaled(column, kind, value))
            self.flag.append(0)

    def clear(self) -> None:
        for name in ("symbol", "column", "tick", "number", "flag"):
            setattr(self, name, array(getattr(self, name).typecode))

    def table(self) -> pa.Table:
        """The changes in (symbol, column, tick) order, numbers as differences."""
        symbol = np.frombuffer(self.symbol, dtype=np.int32)
        column = np.frombuffer(self.column, dtype=np.int16)
        tick = np.frombuffer(self.tick, dtype=np.int32)
        symbol_names = np.array(list(self.symbol_ids), dtype=object)
        column_names = np.array(list(self.column_ids), dtype=object)
        # Sort by name, not id: ids follow the order symbols were first seen.
        symbol_rank = np.argsort(np.argsort(symbol_names)) if len(symbol_names) else symbol_names
        column_rank = np.argsort(np.argsort(column_names)) if len(column_names) else column_names
        order = (
            np.lexsort(
                (tick, column_rank[column].astype(np.int32), symbol_rank[symbol].astype(np.int32))
            )
            if len(tick)
            else np.zeros(0, dtype=np.int64)
        )
        symbol, column, tick = symbol[order], column[order], tick[order]
        number = np.frombuffer(self.number, dtype=np.int64)[order]
        flag = np.frombuffer(self.flag, dtype=np.int8)[order]
        n = len(order)
        starts = group_starts(symbol, column)
        group = np.cumsum(starts, dtype=np.int32)
        # A number is stored as the difference from the key's previous number (nulls and
        # texts in between carry none); the first number of a key as itself.
        is_number = flag == 0
        at = np.flatnonzero(is_number)
        numbers = number[at]
        differences = numbers.copy()
        if len(at) > 1:
            same_key = group[at[1:]] == group[at[:-1]]
            differences[1:] = np.where(same_key, numbers[1:] - numbers[:-1], numbers[1:])
        stored = np.zeros(n, dtype=np.int64)
        stored[at] = differences
        is_text = flag == 2
        texts = pa.nulls(n, pa.string())
        if is_text.any():
            names = np.full(n, None, dtype=object)
            names[is_text] = np.array(list(self.texts), dtype=object)[number[is_text]]
            texts = pa.array(names, pa.string())
        return pa.Table.from_arrays(
            [
                pa.DictionaryArray.from_arrays(
                    pa.array(symbol), pa.array(symbol_names, pa.string())
                ),
                pa.DictionaryArray.from_arrays(
                    pa.array(column), pa.array(column_names, pa.string())
                ),
                pa.array(tick),
                pa.array(stored, mask=~is_number),
                texts,
            ],
            schema=VALUES_SCHEMA,
        )


def encode(events: pa.Table) -> CompactEvents:
    """The compact form of one session's ``scan_events`` rows; raises NotCompactError."""
    try:
        return _encode_events(conform(SCAN_EVENTS, events))
    except NotCompactError:
        raise
    except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError) as error:
        raise NotCompactError(f"events the compact layout cannot hold: {error!r}") from error


def _encode_events(events: pa.Table) -> CompactEvents:
    # Events in the order they happened; payloads are read a batch at a time (a simulated
    # day's are ~465 MB), never all at once as Python objects.
    original = events
    order = time_order(original)
    events = original.drop_columns(["payload"]).take(pa.array(order))  # payloads: by batch
    scans = events.column("scan").to_pylist()
    seqs = events.column("seq").to_pylist()
    asofs = events.column("asof_ns").to_pylist()
    keyframes = events.column("keyframe").to_pylist()
    keyframe_columns = _keyframe_columns(original)

    ticks = {t: i for i, t in enumerate(sorted(set(asofs)))}
    compact: list[bytes] = [b""] * events.num_rows  # in the original row order
    columns_of: dict[str, tuple[str, ...]] = {}
    order_of: dict[str, tuple[str, ...]] = {}
    types: dict[str, str] = {}
    last: dict[tuple[str, str], tuple[int, WireValue]] = {}  # (symbol, column) -> (tick, value)
    changes = _Changes()

    def observe(tick: int, columns: tuple[str, ...], rows: Sequence[Sequence[WireValue]]) -> None:
        for row in rows:
            if len(row) != len(columns):
                raise NotCompactError(f"a row of {len(row)} values under {len(columns)} columns")
            symbol = row[0]
            if not isinstance(symbol, str):
                raise NotCompactError("a row that does not start with its symbol")
            for column, value in zip(columns[1:], row[1:], strict=True):
                key = (symbol, column)
                seen = last.get(key)
                if seen is not None and seen[1] == value:
                    continue  # (1 == 1.0 == True: a change of type alone fails the check)
                if seen is not None and seen[0] == tick:
                    raise NotCompactError(f"two values of {symbol} {column} in one cycle")
                kind = types.get(column)
                if value is not None:
                    kind = _type_of(value)
                    if types.setdefault(column, kind) != kind:
                        raise NotCompactError(
                            f"column {column} holds both {types[column]} and {kind}"
                        )
                last[key] = (tick, value)
                changes.add(symbol, column, tick, kind or "float", value)

    recorded_payloads = _payloads(original, order)
    for i, (row, recorded) in enumerate(zip(order.tolist(), recorded_payloads, strict=True)):
        scan, seq, tick = scans[i], seqs[i], ticks[asofs[i]]
        payload = _decode(recorded)
        if keyframes[i]:
            columns, rows = payload
            columns = tuple(columns)
            if not columns or columns[0] != "symbol":
                raise NotCompactError(f"{scan}: a keyframe whose first column is not the symbol")
            symbols = tuple(str(row[0]) for row in rows)
            observe(tick, columns, rows)
            columns_of[scan], order_of[scan] = columns, symbols
            compact[row] = _encode([list(columns), list(symbols)])
            continue
        upsert, remove, new_order = payload
        if scan not in order_of:
            if seq != 1:
                raise NotCompactError(f"{scan} #{seq}: a delta before any keyframe of the scan")
            order_of[scan] = ()
        columns = keyframe_columns.get((scan, seq)) or columns_of.get(scan, ())
        if not columns:
            raise NotCompactError(f"{scan} #{seq}: the scan's columns are unknown")
        columns_of[scan] = columns
        observe(tick, columns, upsert)
        if new_order is None:
            if remove:
                raise NotCompactError(f"{scan} #{seq}: symbols removed without a new order")
            compact[row] = _encode([])
        else:
            compact[row] = _encode(_placement(order_of[scan], new_order, remove))
            order_of[scan] = tuple(new_order)

    result = CompactEvents(
        original.set_column(
            original.schema.get_field_index("payload"), "payload", pa.array(compact, pa.binary())
        ),
        changes.table(),
        dict(sorted(types.items())),
    )
    last.clear()
    changes.clear()
    _check(result, original, order)
    return result


def _payloads(
    events: pa.Table, order: npt.NDArray[np.int64] | None = None, batch: int = 20_000
) -> Iterator[bytes]:
    """The payloads as bytes, in ``order`` (default: row order), a batch at a time, taken from
    each chunk in place (a simulated day's payloads are ~465 MB: never copied whole)."""
    column = events.column("payload")
    chunks = column.chunks
    starts = np.cumsum([0] + [len(c) for c in chunks])
    for first in range(0, events.num_rows, batch):
        if order is None:
            yield from column.slice(first, batch).to_pylist()
            continue
        wanted = order[first : first + batch]
        which = np.searchsorted(starts, wanted, side="right") - 1
        found: list[bytes] = [b""] * len(wanted)
        for chunk in np.unique(which).tolist():
            at = np.flatnonzero(which == chunk)
            taken = chunks[chunk].take(pa.array(wanted[at] - starts[chunk])).to_pylist()
            for position, payload in zip(at.tolist(), taken, strict=True):
                found[position] = payload
        yield from found


def _keyframe_columns(events: pa.Table) -> dict[tuple[str, int], tuple[str, ...]]:
    """The columns of each keyframe, so a delta recorded with new columns (the scan was edited
    in that cycle) is read with them."""
    keyframes = events.filter(events.column("keyframe"))
    return {
        (scan, seq): tuple(_decode(payload)[0])
        for scan, seq, payload in zip(
            keyframes.column("scan").to_pylist(),
            keyframes.column("seq").to_pylist(),
            keyframes.column("payload").to_pylist(),
            strict=True,
        )
    }


def _scaled(column: str, kind: str, value: WireValue) -> int:
    if kind == "float":
        assert isinstance(value, float)
        if not np.isfinite(value):
            raise NotCompactError(f"column {column} holds {value}")
        number = round(value * SCALE)
        if abs(number) >= _MAX_SCALED or number / SCALE != value:
            raise NotCompactError(
                f"column {column} holds {value!r}, not a whole number of 1/{SCALE}"
            )
        return number
    assert isinstance(value, int)
    if abs(value) >= 2**63:
        raise NotCompactError(f"column {column} holds {value}")
    return int(value)


def _check(compact: CompactEvents, recorded: pa.Table, order: npt.NDArray[np.int64]) -> None:
    """Raise NotCompactError unless decoding ``compact`` gives back every payload of
    ``recorded``, whose rows happened in ``order`` (the order ``decode`` answers in)."""
    keys = zip(
        recorded.column("scan").take(order).to_pylist(),
        recorded.column("seq").take(order).to_pylist(),
        recorded.column("keyframe").take(order).to_pylist(),
        strict=True,
    )
    rebuilt = decode(compact.events, compact.values, compact.types)
    payloads = _payloads(recorded, order)
    for key, payload, (decoded_key, decoded) in zip(keys, payloads, rebuilt, strict=True):
        if key != decoded_key or payload != decoded:
            scan, seq, keyframe = key
            what = "keyframe" if keyframe else "delta"
            raise NotCompactError(f"{scan} #{seq}: the rebuilt {what} differs from the recorded")


# ---------------------------------------------------------------------- decoding


def _value(kind: str, number: int | None, text: str | None) -> WireValue:
    if kind == "text":
        return text
    if number is None:
        return None
    if kind == "float":
        return number / SCALE
    if kind == "bool":
        return bool(number)
    return number


def _absolute(values: pa.Table) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Each change's number (running sum within its symbol and column) and whether it is one."""
    number = values.column("number")
    present = np.asarray(pc.is_valid(number).to_numpy(zero_copy_only=False), dtype=np.bool_)
    deltas = np.asarray(number.fill_null(0).to_numpy(), dtype=np.int64)
    if values.num_rows == 0:
        return deltas, present
    starts = group_starts(codes(values.column("symbol")), codes(values.column("column")))
    return running_sums(deltas, starts), present


def decode(
    events: pa.Table, values: pa.Table, types: dict[str, str], chunk: int = 200_000
) -> Iterator[tuple[tuple[str, int, bool], bytes]]:
    """Every event's original payload, keyed (scan, seq, keyframe), in the order they happened
    (the rows of ``events`` in ``time_order``)."""
    values = values.unify_dictionaries().combine_chunks()
    numbers, present = _absolute(values)
    tick_column = np.asarray(values.column("tick").to_numpy(), dtype=np.int32)
    by_tick = np.argsort(tick_column, kind="stable").astype(np.int32)
    ticks_sorted = tick_column[by_tick]
    # ends[t]: how many changes have a tick <= t (one vectorized search, not one per tick)
    final_tick = int(ticks_sorted[-1]) if len(ticks_sorted) else -1
    ends = np.searchsorted(ticks_sorted, np.arange(final_tick + 1, dtype=np.int32), side="right")
    del tick_column
    symbols, columns, texts = (values.column(c) for c in ("symbol", "column", "text"))

    current: dict[tuple[str, str], WireValue] = {}
    changed_at: dict[str, int] = {}  # symbol -> tick of its last change
    applied = 0

    def advance(to_tick: int) -> None:
        nonlocal applied
        end = int(ends[min(to_tick, final_tick)]) if final_tick >= 0 else 0
        while applied < end:
            take = by_tick[applied : min(end, applied + chunk)]
            indices = pa.array(take)
            for symbol, column, number, is_set, text, tick in zip(
                symbols.take(indices).to_pylist(),
                columns.take(indices).to_pylist(),
                numbers[take].tolist(),
                present[take].tolist(),
                texts.take(indices).to_pylist(),
                ticks_sorted[applied : applied + len(take)].tolist(),
                strict=True,
            ):
                current[(symbol, column)] = _value(
                    types.get(column, "float"), number if is_set else None, text
                )
                changed_at[symbol] = tick
            applied += len(take)

    order = time_order(events)
    keyframe_columns = _keyframe_columns(events)
    scans = events.column("scan").take(order).to_pylist()
    seqs = events.column("seq").take(order).to_pylist()
    asofs = events.column("asof_ns").take(order).to_pylist()
    keyframes = events.column("keyframe").take(order).to_pylist()
    tick_of = {t: i for i, t in enumerate(sorted(set(asofs)))}
    columns_of: dict[str, tuple[str, ...]] = {}
    order_of: dict[str, tuple[str, ...]] = {}
    rows_of: dict[str, dict[str, Row]] = {}
    seen_at: dict[str, int] = {}  # scan -> tick of its last event

    def row(symbol: str, cols: tuple[str, ...]) -> Row:
        return (symbol, *(current.get((symbol, c)) for c in cols[1:]))

    last_tick = -1
    for i, payload in enumerate(_payloads(events, order)):
        scan, seq, tick = scans[i], seqs[i], tick_of[asofs[i]]
        if tick != last_tick:
            advance(tick)
            last_tick = tick
        membership = _decode(payload)
        if keyframes[i]:
            cols, members = tuple(membership[0]), tuple(membership[1])
            rows = {s: row(s, cols) for s in members}
            columns_of[scan], order_of[scan], rows_of[scan] = cols, members, rows
            seen_at[scan] = tick
            yield (scan, seq, True), _encode([list(cols), [rows[s] for s in members]])
            continue
        cols = keyframe_columns.get((scan, seq)) or columns_of.get(scan, ())
        before_order = order_of.get(scan, ())
        before_rows = rows_of.get(scan, {}) if cols == columns_of.get(scan) else {}
        after_order = _apply_placement(before_order, membership) if membership else before_order
        since = seen_at.get(scan, -1)
        rows = {}
        upsert = []
        for symbol in after_order:
            old = before_rows.get(symbol)
            new = row(symbol, cols) if old is None or changed_at.get(symbol, -1) > since else old
            rows[symbol] = new
            if new != old:
                upsert.append(new)
        columns_of[scan], order_of[scan], rows_of[scan] = cols, after_order, rows
        seen_at[scan] = tick
        removed = list(membership[0]) if membership else []
        yield (
            (scan, seq, False),
            _encode([upsert, removed, list(after_order) if membership else None]),
        )


# ---------------------------------------------------------------------- time travel


def scan_at(
    con: duckdb.DuckDBPyConnection,
    events_path: str,
    values_path: str,
    types: dict[str, str],
    scan: str,
    at_ns: int,
) -> Snapshot | None:
    """``scan`` as published at ``at_ns``, from one session's compact files: the symbols from
    the last keyframe and the deltas after it, their values summed up to that event's tick."""
    events = f"read_parquet({sql_string(events_path)})"
    key = con.execute(
        f"SELECT seq, asof_ns, payload FROM {events} WHERE scan = ? AND keyframe "
        "AND asof_ns <= ? ORDER BY seq DESC LIMIT 1",
        [scan, at_ns],
    ).fetchall()
    if not key:
        return None
    seq, asof_ns, payload = key[0]
    columns, members = _decode(payload)
    symbols = tuple(members)
    for d_seq, d_asof, d_payload in con.execute(
        f"SELECT seq, asof_ns, payload FROM {events} WHERE scan = ? AND NOT keyframe "
        "AND seq > ? AND asof_ns <= ? ORDER BY seq",
        [scan, seq, at_ns],
    ).fetchall():
        if d_seq != seq + 1:
            raise SequenceGapError(f"delta {scan}#{d_seq} does not follow {scan}#{seq}")
        membership = _decode(d_payload)
        if membership:
            symbols = _apply_placement(symbols, membership)
        seq, asof_ns = d_seq, d_asof
    found = con.execute(
        f"SELECT count(DISTINCT asof_ns) FROM {events} WHERE asof_ns < ?", [asof_ns]
    ).fetchone()
    tick = int(found[0]) if found else 0
    shown = list(columns[1:])
    value: dict[tuple[str, str], WireValue] = {}
    if symbols and shown:
        marks = ", ".join("?" for _ in symbols)
        column_marks = ", ".join("?" for _ in shown)
        for symbol, column, number, is_null, text in con.execute(
            'SELECT symbol, "column", sum(number), arg_max(number IS NULL AND text IS NULL, tick), '
            f"arg_max(text, tick) FROM read_parquet({sql_string(values_path)}) "
            f'WHERE symbol IN ({marks}) AND "column" IN ({column_marks}) AND tick <= ? '
            'GROUP BY symbol, "column"',
            [*symbols, *shown, tick],
        ).fetchall():
            kind = types.get(column, "float")
            value[(symbol, column)] = None if is_null else _value(kind, number, text)
    rows = tuple((s, *(value.get((s, c)) for c in shown)) for s in symbols)
    return Snapshot(scan, seq, asof_ns, tuple(columns), rows)
