"""The archive's compact layouts: exact round trips on recorded data, refusals, time travel.

The recorded data is real: a small simulated market run through the live pipeline (state,
scans on the market-time grid, keyframes) exactly as the storage benchmark records a session.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapescan.config import Settings
from tapescan.market.calendar import et_to_ns, market_calendar
from tapescan.ops import storage_bench
from tapescan.scan.delta import apply
from tapescan.store import bar_codec, event_codec
from tapescan.store.archive import Archive, ArchiveError
from tapescan.store.codecs import NotCompactError, group_starts, running_sums
from tapescan.store.history import History, scan_at_from_rows
from tapescan.store.records import decode_delta, decode_keyframe
from tapescan.store.tables import MINUTE_BARS, SCAN_EVENTS
from tests.store.test_contract import minute_bars

CAL = market_calendar()
DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """09:20-09:50 ET of a 400-symbol simulated session, recorded as a live run records it."""
    source = tmp_path_factory.mktemp("recorded")
    writer = storage_bench._Writer((), source)
    with storage_bench._Bar(False) as bar:
        storage_bench._record_session(
            400,
            5,
            DAY,
            et_to_ns(DAY, dt.time(9, 20)),
            et_to_ns(DAY, dt.time(9, 50)),
            CAL,
            Settings(keyframe_minutes=5),
            writer,
            bar,
            lambda _: None,
        )
    return {
        name: pq.read_table(source / f"{name}.parquet") for name in ("minute_bars", "scan_events")
    }


def _events(recorded: dict[str, pa.Table]) -> pa.Table:
    return recorded["scan_events"].sort_by([(c, "ascending") for c in SCAN_EVENTS.key])


# ---------------------------------------------------------------------- minute bars


def test_recorded_minute_bars_round_trip_exactly_and_read_plain_through_sql(
    recorded: dict[str, pa.Table], tmp_path: Path
) -> None:
    bars = recorded["minute_bars"].sort_by([(c, "ascending") for c in MINUTE_BARS.key])
    compact = bar_codec.encode(bars)
    assert compact.schema == bar_codec.COMPACT_SCHEMA
    assert bar_codec.decode(compact).equals(bars)
    archive = Archive(tmp_path)
    archive.write("minute_bars", DAY, bars)
    assert archive.layout("minute_bars", DAY) == bar_codec.LAYOUT
    assert archive.read_session("minute_bars", DAY).equals(bars)
    symbol = bars.column("symbol")[bars.num_rows // 2].as_py()
    through_sql = archive.read(
        "SELECT * FROM minute_bars WHERE symbol = %s ORDER BY ts", [symbol], MINUTE_BARS.schema
    )
    assert through_sql.num_rows > 10
    assert through_sql.equals(bars.filter(pc.equal(bars.column("symbol"), symbol)))


def test_bars_off_the_tick_grid_stay_plain_and_exact(tmp_path: Path) -> None:
    bars = minute_bars(DAY, ["AAPL", "TSLA"], 30)  # 0.1 + 0.2 and other awkward doubles
    with pytest.raises(NotCompactError):
        bar_codec.encode(bars)
    archive = Archive(tmp_path)
    archive.write("minute_bars", DAY, bars)
    assert archive.layout("minute_bars", DAY) == "plain"
    back = archive.read("SELECT * FROM minute_bars ORDER BY symbol, ts", [], MINUTE_BARS.schema)
    assert back.equals(bars.sort_by([("symbol", "ascending"), ("ts", "ascending")]))


def test_both_layouts_answer_one_view(recorded: dict[str, pa.Table], tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    plain_day = CAL.next_session(DAY)
    archive.write("minute_bars", DAY, recorded["minute_bars"])
    archive.write("minute_bars", plain_day, minute_bars(plain_day, ["ZZZ"], 5))
    count = archive.read(
        "SELECT session, count(*) AS n FROM minute_bars GROUP BY session ORDER BY session",
        [],
        pa.schema([("session", pa.date32()), ("n", pa.int64())]),
    )
    assert count.column("n").to_pylist() == [recorded["minute_bars"].num_rows, 5]


# ---------------------------------------------------------------------- scan events


def test_recorded_events_round_trip_byte_for_byte(
    recorded: dict[str, pa.Table], tmp_path: Path
) -> None:
    events = _events(recorded)
    compact = event_codec.encode(events)  # decodes and compares every payload itself
    assert compact.events.num_rows == events.num_rows
    assert compact.values.num_rows > 0
    plain_bytes = sum(len(p) for p in events.column("payload").to_pylist())
    compact_bytes = sum(len(p) for p in compact.events.column("payload").to_pylist())
    assert compact_bytes < plain_bytes / 5  # memberships only
    archive = Archive(tmp_path)
    path = archive.write("scan_events", DAY, events)
    assert archive.layout("scan_events", DAY) == event_codec.LAYOUT
    assert len(list(path.parent.glob("*.values.parquet"))) == 1
    assert archive.read_session("scan_events", DAY).equals(events)
    assert archive.rows("scan_events", DAY) == events.num_rows
    sizes = archive.table_bytes()
    assert sizes["scan_events"] == sum(p.stat().st_size for p in path.parent.iterdir())


def test_rewriting_a_session_leaves_one_values_file(
    recorded: dict[str, pa.Table], tmp_path: Path
) -> None:
    archive = Archive(tmp_path)
    events = _events(recorded)
    archive.write("scan_events", DAY, events)
    first = archive.read_session("scan_events", DAY)
    path = archive.write("scan_events", DAY, events.slice(0, events.num_rows - 40))
    assert len(list(path.parent.glob("*.values.parquet"))) == 1
    assert archive.read_session("scan_events", DAY).num_rows == first.num_rows - 40


def test_time_travel_from_compact_files_equals_the_rows(
    recorded: dict[str, pa.Table], tmp_path: Path
) -> None:
    events = _events(recorded)
    compact_archive = Archive(tmp_path / "compact")
    compact_archive.write("scan_events", DAY, events)
    assert compact_archive.layout("scan_events", DAY) == event_codec.LAYOUT
    plain_archive = Archive(tmp_path / "plain", compact=False)
    plain_archive.write("scan_events", DAY, events)
    assert plain_archive.layout("scan_events", DAY) == "plain"
    asofs = sorted(set(events.column("asof_ns").to_pylist()))
    scans = sorted(set(events.column("scan").to_pylist()))
    rng = random.Random(3)
    instants = [asofs[0] - 1, asofs[0], asofs[-1], asofs[-1] + 10**9]
    instants += rng.sample(asofs, 25) + [a + 1 for a in rng.sample(asofs, 10)]
    compared = 0
    for at_ns in instants:
        for scan in scans:
            expected = scan_at_from_rows(plain_archive, scan, DAY, at_ns)
            got = compact_archive.scan_at(scan, DAY, at_ns)
            assert got == expected, (scan, at_ns)
            compared += expected is not None
    assert compared > 500
    # through History, with an empty hot store in front
    empty = Archive(tmp_path / "empty")
    history = History(empty, compact_archive)
    at = asofs[len(asofs) // 2]
    assert history.scan_at(scans[0], DAY, at) == scan_at_from_rows(plain_archive, scans[0], DAY, at)


def test_events_it_cannot_rebuild_are_refused(recorded: dict[str, pa.Table]) -> None:
    events = _events(recorded)
    payloads = events.column("payload").to_pylist()
    keyframes = events.column("keyframe").to_pylist()

    def with_payload(i: int, payload: bytes) -> pa.Table:
        changed = list(payloads)
        changed[i] = payload
        column = events.schema.get_field_index("payload")
        return events.set_column(column, "payload", pa.array(changed, pa.binary()))

    with_upsert = next(
        i for i, k in enumerate(keyframes) if not k and msgspec.msgpack.decode(payloads[i])[0]
    )
    upsert, remove, order = msgspec.msgpack.decode(payloads[with_upsert])
    row = list(upsert[0])
    price = next(j for j, v in enumerate(row) if isinstance(v, float))
    off_grid = list(row)
    off_grid[price] = row[price] + 1e-7  # not a whole number of 1/10,000
    with pytest.raises(NotCompactError, match="1/10000"):
        event_codec.encode(
            with_payload(
                with_upsert, msgspec.msgpack.encode([[off_grid, *upsert[1:]], remove, order])
            )
        )
    # a recorded delta the rebuilt one would not equal: it also re-sends an unchanged row
    scans = events.column("scan").to_pylist()
    seqs = events.column("seq").to_pylist()
    asofs = events.column("asof_ns").to_pylist()
    first = next(
        i for i, k in enumerate(keyframes) if k and len(msgspec.msgpack.decode(payloads[i])[1]) > 5
    )
    scan = scans[first]
    snapshot = decode_keyframe(scan, seqs[first], asofs[first], payloads[first])
    for i in sorted(
        (i for i in range(len(scans)) if scans[i] == scan and not keyframes[i]),
        key=lambda i: seqs[i],
    ):
        if seqs[i] <= snapshot.seq:
            continue
        delta = decode_delta(scan, seqs[i], asofs[i], payloads[i])
        members = set(delta.order if delta.order is not None else snapshot.symbols)
        upserted = {u[0] for u in delta.upsert}
        unchanged = [r for r in snapshot.rows if r[0] in members and r[0] not in upserted]
        if unchanged:
            resent = msgspec.msgpack.encode(
                [[*delta.upsert, unchanged[0]], delta.remove, delta.order]
            )
            with pytest.raises(NotCompactError, match="differs"):
                event_codec.encode(with_payload(i, resent))
            break
        snapshot = apply(snapshot, delta)
    else:
        pytest.fail("no delta with unchanged rows to re-send")
    with pytest.raises(NotCompactError):
        event_codec.encode(with_payload(0, b"\xc1 not msgpack"))


def test_a_refused_session_is_archived_plain_and_exact(
    recorded: dict[str, pa.Table], tmp_path: Path
) -> None:
    events = _events(recorded)
    payloads = events.column("payload").to_pylist()
    payloads[5] = b"\x00\x01 opaque"
    broken = events.set_column(
        events.schema.get_field_index("payload"), "payload", pa.array(payloads, pa.binary())
    )
    archive = Archive(tmp_path)
    archive.write("scan_events", DAY, broken)
    assert archive.layout("scan_events", DAY) == "plain"
    assert not list((tmp_path / "scan_events").glob("*.values.parquet"))
    assert archive.read_session("scan_events", DAY).equals(broken)


@given(
    st.lists(st.integers(0, 40), unique=True, max_size=30),
    st.lists(st.integers(0, 60), unique=True, max_size=30),
)
def test_a_placement_turns_one_order_into_the_other(before: list[int], after: list[int]) -> None:
    old = [f"S{i}" for i in before]
    new = [f"S{i}" for i in after]
    removed = [s for s in old if s not in new]
    edit = event_codec._placement(old, new, removed)
    assert event_codec._apply_placement(old, edit) == tuple(new)
    kept = [s for s in new if s in old and s not in edit[2]]
    assert kept == [s for s in old if s in kept]  # the rest keep their relative order


def test_a_missing_values_file_is_an_archive_error_and_a_codec_bug_falls_back_to_plain(
    recorded: dict[str, pa.Table], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path)
    events = _events(recorded)
    path = archive.write("scan_events", DAY, events)
    (values,) = path.parent.glob("*.values.parquet")
    values.unlink()
    with pytest.raises(ArchiveError, match=r"values\.parquet"):
        archive.read_session("scan_events", DAY)

    def broken(_: pa.Table) -> None:
        raise RuntimeError("a bug in the codec")

    monkeypatch.setattr(event_codec, "encode", broken)
    monkeypatch.setattr(bar_codec, "encode", broken)
    archive.write("scan_events", DAY, events)
    archive.write("minute_bars", DAY, recorded["minute_bars"])
    assert archive.layout("scan_events", DAY) == archive.layout("minute_bars", DAY) == "plain"
    assert archive.read_session("scan_events", DAY).equals(events)


def test_running_sums_start_again_at_each_group() -> None:
    symbol = np.array([0, 0, 0, 1, 1, 2], dtype=np.int32)
    column = np.array([0, 0, 1, 1, 1, 1], dtype=np.int16)
    starts = group_starts(symbol, column)
    assert starts.tolist() == [True, False, True, True, False, True]
    steps = np.array([5, 2, 7, 1, -3, 4], dtype=np.int64)
    assert running_sums(steps, starts).tolist() == [5, 7, 7, 1, -2, 4]
